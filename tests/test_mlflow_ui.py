"""The MLflow UI of a real sweep, rendered by headless Chromium (Debian's `chromium`, installed by the
Makefile's set-up): the training layout (no GenAI navigation), the sweep run and its trials named by
their knobs, the knobs as params, and the top-1 vs sparsity series drawn per trial."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.knobs import Knobs, knob
from ovit_ray.orchestration.kinds import ExperimentKind, Host, register_kind
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.tracking.server import MlflowServer
from ovit_ray.orchestration.tracking.ui import (
    GENAI_MARKERS,
    chromium,
    compare_url,
    experiment_url,
    render,
    run_url,
)
from ovit_ray.orchestration.tune.driver import run_sweep

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


class EpochsSpec(Knobs):
    value: int = knob(0, "the trial's validation top-1, in tenths", ge=0, le=10)


def _epochs(config: Mapping[str, Any], reporter: Any) -> dict[str, Any]:
    """Four epochs whose top-1 is the trial's value: ASHA stops the worse trial at its first rung."""
    value = config["value"] / 10
    for epoch in range(4):
        target = {"target": 0.5, "top1": value, "val_top1": value} if epoch == 3 else None
        reporter.report(
            {
                "epoch": epoch,
                "top1": value,
                "val_top1": value,
                "sparsity": 0.5,
                **({"target": target} if target else {}),
            },
            None,
        )
    return {"total_epochs": 4}


@register_kind
class Epochs(ExperimentKind):
    """A trial that reports epochs (so ASHA can stop one), for a deterministic stopped trial."""

    name = "ui-epochs"
    summary = "a test's kind that reports epochs"
    spec = EpochsSpec
    targets_knob = None
    reports_epochs = True

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.spec import TrainSpec

        host.train(_epochs, {"value": spec.value}, TrainSpec(), 4, "run0")


@pytest.fixture(scope="module")
def served_sweep(tmp_path_factory: pytest.TempPathFactory):
    """A 2-trial Optuna sweep, and into its store a sweep whose second trial ASHA stops; then an MLflow
    server on the folder (SQLite store + artifacts/)."""
    if chromium() is None:  # `make test` installs it; a bare venv run says how instead of failing obscurely
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (the Makefile's set-up does this)"
        )
    tmp = tmp_path_factory.mktemp("ui")
    sweep, stopping = tmp / "ui.yaml", tmp / "stop.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "ui",
                "description": "browser test sweep",
                "model": "digits-vit",
                "gradual": {"targets": [0.5, 0.75], "window_epochs": 1, "num_grads": 16},
                "search": {
                    "space": "quickstart",
                    "algorithm": "optuna",
                    "num_samples": 2,
                    "params": {"block_size": {"choice": [16, 32]}, "num_grads": 16},
                },
                "mlflow": {"experiment": "ui-test"},
            }
        )
    )
    stopping.write_text(
        yaml.safe_dump(
            {
                "name": "stop",
                "ui-epochs": {},
                "search": {
                    "params": {"value": {"grid": [9, 1]}},
                    "max_concurrent_trials": 1,
                    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
                },
                "mlflow": {"experiment": "ui-stop"},
            }
        )
    )
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))
        run_sweep(load_sweep(sweep), out)
        run_sweep(load_sweep(stopping), tmp / "stop", mlflow_uri=f"sqlite:///{out / 'mlflow.db'}")
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ui-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r.info.run_id for r in runs if r.data.tags.get("ovit.role") == "sweep")
    server = MlflowServer(out).start()
    try:
        yield (
            server.url,
            experiment.experiment_id,
            parent,
            runs,
            client.get_experiment_by_name("ui-stop").experiment_id,
        )
    finally:
        server.stop()


def test_a_plain_link_in_a_fresh_browser_opens_the_training_view_and_the_stopped_trial_stands_out(
    served_sweep,
) -> None:
    url, _, _, _, stop_id = served_sweep
    dom = render(f"{url}/#/experiments/{stop_id}")  # no workflowType in the link: what a user pastes
    assert "Model training" in dom and not [m for m in GENAI_MARKERS if m in dom], "GenAI view shown"
    table = render(experiment_url(url, stop_id, "table", objective="epochs_total"))  # trials listed flat
    assert (
        "stopped: value1" in table and "value9" in table
    )  # ASHA's stop stands apart from the finished trial
    client = MlflowClient(url)
    statuses = {
        r.data.tags.get("ovit.status")
        for r in client.search_runs([stop_id])
        if r.data.tags.get("ovit.role") == "trial"
    }
    assert statuses == {"finished", "stopped_early"}


def test_a_plain_link_lists_every_trial_for_the_charts_to_overlay(served_sweep) -> None:
    """MLflow's chart view draws the runs its table shows: trials are not folded under their sweep."""
    url, experiment_id, _, runs, _ = served_sweep
    dom = render(f"{url}/#/experiments/{experiment_id}", size=(1600, 3000))
    assert all(r.info.run_name in dom for r in runs)  # the sweep run and both trials, none folded away


def test_runs_table_lists_the_sweep_and_its_trials_in_the_training_layout(served_sweep) -> None:
    url, experiment_id, parent_id, runs, _ = served_sweep
    dom = render(experiment_url(url, experiment_id, "table", objective="val_top1_final"))
    description = MlflowClient(f"{url}").get_experiment(experiment_id).tags["mlflow.note.content"]
    assert "Model training" in dom and description in dom  # layout switch and the sweep's description
    assert not [m for m in GENAI_MARKERS if m in dom], "GenAI navigation shown"
    for run in runs:  # the sweep run and each trial, named by knobs (B16-m16-λ3.4e-8-lr5.1e-4)
        assert run.info.run_name in dom
    assert sum(r.info.run_name.startswith("B") for r in runs) == len(runs) - 1


def test_trial_page_shows_knobs_its_sweep_and_frontier_series(served_sweep) -> None:
    url, experiment_id, parent_id, runs, _ = served_sweep
    trial = next(r for r in runs if r.data.tags.get("pruned") == "false")
    overview = render(run_url(url, experiment_id, trial.info.run_id), size=(1600, 4000))
    assert "ovit.sweep_run" in overview and parent_id in overview  # the tag that ties it to its sweep
    for name in ("block_size", "num_grads", "damp", "lr_max"):
        assert name in overview
    assert "final_sparsity" not in overview  # unused params are not logged
    assert "top1_vs_sparsity" in overview and "target_0.5000/top1" not in overview


def test_compare_page_puts_knobs_and_objective_side_by_side(served_sweep) -> None:
    """The compare page's metrics table is a virtualized grid 300 px high: rows past the first ~17 (in name
    order, so `val_top1_*`) render only when scrolled, which a DOM dump does not do. The test reads the knobs
    and the test top-1 objective `top1_final`, which render without scrolling."""
    url, experiment_id, parent_id, runs, _ = served_sweep
    trials = [r for r in runs if r.info.run_id != parent_id]
    dom = render(compare_url(url, experiment_id, [r.info.run_id for r in trials]), size=(1600, 4000))
    for name in ("block_size", "damp", "lr_max", "top1_final"):
        assert name in dom
    assert all(r.info.run_name in dom for r in trials)
