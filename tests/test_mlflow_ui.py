"""The MLflow UI of a real sweep, rendered by headless Chromium (Debian's `chromium`, installed by the
Makefile's set-up): the training layout (no GenAI navigation), the sweep run and its trials named by
their knobs, the knobs as params, and the top-1 vs sparsity series drawn per trial."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.orchestration.tracking.server import MlflowServer
from ovit_ray.orchestration.tracking.ui import (
    GENAI_MARKERS,
    chromium,
    compare_url,
    experiment_url,
    render,
    run_url,
)
from ovit_ray.orchestration.tune.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory: pytest.TempPathFactory):
    """A 2-trial Optuna sweep, then an MLflow server on its folder (SQLite store + artifacts/)."""
    if chromium() is None:  # `make test` installs it; a bare venv run says how instead of failing obscurely
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (the Makefile's set-up does this)"
        )
    tmp = tmp_path_factory.mktemp("ui")
    sweep = tmp / "ui.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "ui",
                "description": "browser test sweep",
                "train": {"model": "digits-vit", "targets": [0.5, 0.75], "window_epochs": 1, "num_grads": 16},
                "search": {
                    "space": "quickstart",
                    "algorithm": "optuna",
                    "num_samples": 2,
                    "overrides": {"block_size": {"choice": [16, 32]}, "num_grads": 16},
                },
                "mlflow": {"experiment": "ui-test"},
            }
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))
        outcome = run_sweep(sweep, tmp / "out")
    client = MlflowClient(f"sqlite:///{tmp / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ui-test")
    runs = client.search_runs([experiment.experiment_id])
    server = MlflowServer(tmp / "out").start()
    try:
        yield server.url, experiment.experiment_id, outcome.parent_run_id, runs
    finally:
        server.stop()


def test_runs_table_lists_the_sweep_and_its_trials_in_the_training_layout(served_sweep) -> None:
    url, experiment_id, parent_id, runs = served_sweep
    dom = render(experiment_url(url, experiment_id, "table", objective="val_top1_final"))
    description = MlflowClient(f"{url}").get_experiment(experiment_id).tags["mlflow.note.content"]
    assert "Model training" in dom and description in dom  # layout switch and the sweep's description
    assert not [m for m in GENAI_MARKERS if m in dom], "GenAI navigation shown"
    for run in runs:  # the sweep run and each trial, named by knobs (B16-m16-λ3.4e-8-lr5.1e-4)
        assert run.info.run_name in dom
    assert sum(r.info.run_name.startswith("B") for r in runs) == len(runs) - 1


def test_trial_page_shows_knobs_parent_and_frontier_series(served_sweep) -> None:
    url, experiment_id, parent_id, runs = served_sweep
    trial = next(r for r in runs if r.data.tags.get("pruned") == "false")
    overview = render(run_url(url, experiment_id, trial.info.run_id), size=(1600, 4000))
    assert (
        "Parent run" in overview
        and next(r for r in runs if r.info.run_id == parent_id).info.run_name in overview
    )
    for knob in ("block_size", "num_grads", "damp", "lr_max"):
        assert knob in overview
    assert "final_sparsity" not in overview  # unused params are not logged
    assert "top1_vs_sparsity" in overview and "target_0.5000/top1" not in overview


def test_compare_page_puts_knobs_and_objective_side_by_side(served_sweep) -> None:
    url, experiment_id, parent_id, runs = served_sweep
    trials = [r for r in runs if r.info.run_id != parent_id]
    dom = render(compare_url(url, experiment_id, [r.info.run_id for r in trials]), size=(1600, 4000))
    for knob in ("block_size", "damp", "lr_max", "val_top1_final"):
        assert knob in dom
    assert all(r.info.run_name in dom for r in trials)
