"""Sweep vs independent strategies on real local Ray through `ovit-ray compare-strategies`: K targets from one
run, fewer epochs, allocated hours beside the loop's, Parquet rows, and a second run that adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovit_ray.cli.main import main
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.training.preset import preset_checkpoint

pytestmark = pytest.mark.ray
TARGETS = [0.5, 0.8]
ARGS = [
    "--targets",
    "0.5",
    "0.8",
    "--window-epochs",
    "1",
    "--method",
    "magnitude",
    "--augment",
    "none",
    "--max-steps-per-epoch",
    "3",
]


@pytest.fixture(scope="module")
def comparison(ray_local, tmp_path_factory) -> tuple[Path, str]:
    preset_checkpoint("digits-vit", progress=False)
    out = tmp_path_factory.mktemp("strategies") / "out"
    assert main(["compare-strategies", *ARGS, "--out", str(out)]) == 0
    from ovit_ray.orchestration.results.strategies import strategy_table

    return out, strategy_table(out)


def test_sweep_reports_every_target_from_one_run_with_fewer_epochs(comparison):
    out, table = comparison
    rows = read_rows(out / "results.parquet")
    trials = read_rows(out / "trials.parquet")
    sweep = [t for t in trials if t["strategy"] == "sweep"]
    independent = [t for t in trials if t["strategy"] == "independent"]
    assert len(sweep) == 1 and len(independent) == 1  # the independent trial runs one run per target
    assert sorted(r["target"] for r in rows if r["strategy"] == "sweep") == TARGETS
    assert sweep[0]["epochs_total"] == 2 and independent[0]["epochs_total"] == 1 + 2
    for t in trials:
        assert 0 < t["cpu_hours"] <= t["allocated_cpu_hours"]  # start-up is billed, not in the loop
    # the sweep's epochs so far grow with each target; each independent run costs its own target's budget
    by = {(r["strategy"], r["target"]): r for r in rows}
    assert (
        [by["sweep", t]["epochs_trained"] for t in TARGETS]
        == [1, 2]
        == [by["independent", t]["epochs_trained"] for t in TARGETS]
    )
    assert all(0 <= r["top1"] <= 1 for r in rows)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("sweep") and "allocated" in line for line in lines)
    assert any(line.startswith("independent") and "allocated" in line for line in lines)


def test_parquet_rows_and_rerun_adds_nothing(comparison):
    out, _ = comparison
    rows = read_rows(out / "results.parquet")
    assert len(rows) == 2 * len(TARGETS)
    assert {
        "strategy",
        "target",
        "achieved_sparsity",
        "top1",
        "epochs_trained",
        "gpu_hours",
        "cpu_hours",
    } <= set(rows[0])
    assert (
        main(["compare-strategies", *ARGS, "--out", str(out)]) == 0
    )  # resumes: nothing re-run or duplicated
    assert read_rows(out / "results.parquet") == rows
