"""Sweep vs independent strategies on real local Ray: K targets from one run, fewer epochs, Parquet rows."""

from __future__ import annotations

import pytest

from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.specs.run import make_config
from ovit_ray.orchestration.train.strategies import RESULTS_FILE, compare, run_strategies
from ovit_ray.training.preset import preset_checkpoint

pytestmark = pytest.mark.ray
TARGETS = [0.5, 0.8]


@pytest.fixture(scope="module")
def comparison(ray_local, tmp_path_factory):
    preset_checkpoint("digits-vit", progress=False)
    out = tmp_path_factory.mktemp("strategies")
    config = make_config(
        {
            "targets": TARGETS,
            "window_epochs": 1,
            "method": "magnitude",
            "augment": "none",
            "max_steps_per_epoch": 3,
            "out": str(out),
        }
    )
    return config, run_strategies(config)


def test_sweep_reports_every_target_from_one_run_with_fewer_epochs(comparison):
    _, results = comparison
    sweep = [r for r in results if r.strategy == "sweep"]
    independent = [r for r in results if r.strategy == "independent"]
    assert len(sweep) == 1 and len(independent) == len(TARGETS)
    assert [row["target_sparsity"] for row in sweep[0].rows] == TARGETS
    table = compare(results)
    assert [row["target"] for row in table] == [*TARGETS, "total"]
    totals = table[-1]
    assert totals["sweep_epochs"] == 2 and totals["independent_epochs"] == 1 + 2
    assert 0 < totals["sweep_cpu_hours"] and 0 < totals["independent_cpu_hours"]
    # the sweep's epochs so far grow with each target; each independent run costs its own target's budget
    assert (
        [row["sweep_epochs"] for row in table[:-1]]
        == [1, 2]
        == [row["independent_epochs"] for row in table[:-1]]
    )
    for row in table[:-1]:
        assert 0 <= row["sweep_top1"] <= 1 and 0 <= row["independent_top1"] <= 1


def test_parquet_rows_and_rerun_adds_nothing(comparison):
    config, results = comparison
    rows = read_rows(f"{config.out}/{RESULTS_FILE}")
    assert len(rows) == 2 * len(TARGETS)
    assert {
        "strategy",
        "target_sparsity",
        "achieved_sparsity",
        "top1",
        "epochs",
        "gpu_hours",
        "cpu_hours",
    } <= set(rows[0])
    again = run_strategies(config)  # finished runs are reused, never re-run or duplicated
    assert all(r.reused for r in again)
    assert len(read_rows(f"{config.out}/{RESULTS_FILE}")) == len(rows)
