"""Real local Ray sweeps on the digits preset: Optuna + MLflow + Parquet, a grid run once, the study on disk.
(The interrupt-and-resume test kills at a known event: tests/test_experiment_kinds.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.knobs import short_value
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.specs.search_space import Dist
from ovit_ray.orchestration.tune.driver import run_sweep
from ovit_ray.orchestration.tune.search import StudySearcher, optuna_distribution

ROOT = Path(__file__).resolve().parents[1]
GRADUAL = {"targets": [0.5, 0.75], "window_epochs": 1, "num_grads": 16}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))


def _sweep_file(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "model": "digits-vit", "gradual": GRADUAL, **fields}))
    return path


def test_stopped_trials_are_pruned_and_finished_ones_take_the_drivers_objective(tmp_path: Path) -> None:
    objectives = {"b": {"val_top1_final": 0.9}}
    search = StudySearcher(
        {"x": Dist(uniform=(0.0, 1.0))},
        [("val_top1_final", "max")],
        f"sqlite:///{tmp_path / 's.db'}",
        "s",
        0,
        lambda trial: objectives.get(trial, {}),
    )
    for trial_id in ("a", "b"):
        search.suggest(trial_id)
    search.on_trial_result("b", {"ovit/target/target": 0.5, "ovit/target/val_top1": 0.7})
    search.on_trial_complete("a", {"training_iteration": 2})  # no final report: stopped early
    search.on_trial_complete("b", {"trial_complete": 1})
    trials = search.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert trials[1].values == [0.9] and trials[1].intermediate_values == {50: 0.7}
    assert search.study.metric_names == ["val_top1_final"]
    assert [t.user_attrs["tune_trial_id"] for t in trials] == ["a", "b"]
    assert isinstance(
        optuna_distribution(Dist(loguniform=(1e-9, 1e-6))), optuna.distributions.FloatDistribution
    )


@pytest.mark.ray
@pytest.mark.slow
def test_optuna_sweep_writes_parquet_and_nested_mlflow_runs(tmp_path: Path) -> None:
    path = _sweep_file(
        tmp_path,
        search={
            "space": "quickstart",
            "algorithm": "optuna",
            "num_samples": 2,
            "params": {"block_size": {"choice": [16, 32]}, "num_grads": 16, "lr_schedule": "cosine"},
        },
        mlflow={"experiment": "sweep-test"},
    )
    out_dir = tmp_path / "out"
    outcome = run_sweep(load_sweep(path), out_dir)
    assert outcome.counts["finished"] == 2 and outcome.counts["failed"] == 0
    rows = read_rows(out_dir / "results.parquet")
    assert len(rows) == 4 and len({(r["trial_id"], r["target"]) for r in rows}) == 4
    for r in rows:
        assert r["strategy"] == "sweep" and r["block_size"] in (16, 32) and 1e-9 <= r["damp"] <= 1e-5
        assert abs(r["achieved_sparsity"] - r["target"]) < 1e-6 and 0 < r["top1"] <= 1
        assert r["macs_ratio"] < 1 and r["cpu_hours"] > 0 and r["kind"] == "gradual"
        assert not Path(r["kept_model"]).is_absolute() and (out_dir / r["kept_model"]).is_file()
    trials = read_rows(out_dir / "trials.parquet")
    assert sorted(t["status"] for t in trials) == ["finished", "finished"]
    assert all(t["allocated_cpu_hours"] >= t["cpu_hours"] > 0 for t in trials)  # start-up is billed too
    client = MlflowClient(f"sqlite:///{out_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("ovit.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("ovit.sweep_run") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2 and parent.data.tags["ovit.kind"] == "gradual"
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["epochs_total"] == 4
    assert (
        "allocated_cpu_hours_total" in parent.data.metrics
        and parent.data.params["search.algorithm"] == "optuna"
    )
    assert "allocated_cpu_hours.sweep" in parent.data.metrics  # totals per strategy
    assert "null" not in parent.data.params.values() and len(parent.data.params) < 72
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # Artifacts are stored relative to the store (mlflow-artifacts:), in artifacts/ next to mlflow.db.
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/sweep-test/")
    stored = out_dir / "artifacts" / parent.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert {"sweep.yaml", "best_config.json", "plots"} <= {p.name for p in stored.iterdir()}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["pruned"] == "false"
        assert child.data.tags["ovit.status"] == "finished"
        params = child.data.params
        assert {"damp", "block_size", "num_grads", "lr_schedule", "strategy"} <= set(params)
        assert not {"final_sparsity", "end_epoch", "checkpoint", "pattern"} & set(params)  # unused or None
        assert "null" not in params.values() and "None" not in params.values()
        assert child.info.run_name == (
            f"B{params['block_size']}-m16-λ{short_value(float(params['damp']))}"
            f"-lr{short_value(float(params['lr_max']))}"
        )  # the pruner's knobs, then the searched ones
        assert {"val_top1_final", "top1", "sparsity", "cpu_hours", "allocated_cpu_hours"} <= set(
            child.data.metrics
        )
        assert len(client.get_metric_history(child.info.run_id, "top1")) == 2  # one point per epoch
        frontier = client.get_metric_history(child.info.run_id, "top1_vs_sparsity")
        assert sorted(m.step for m in frontier) == [50, 75]
    sweep_id = json.loads((out_dir / "sweep.json").read_text())["sweep_id"]
    study = optuna.load_study(study_name=f"t-{sweep_id}", storage=f"sqlite:///{out_dir / 'optuna.db'}")
    assert study.metric_names == ["val_top1_final"]
    assert all(sorted(t.intermediate_values) == [50, 75] for t in study.trials)  # the curve per target


@pytest.mark.ray
@pytest.mark.slow
def test_grid_runs_each_point_once_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _sweep_file(
        tmp_path,
        gradual={**GRADUAL, "targets": [0.75]},
        search={"params": {"method": {"grid": ["ovit", "magnitude"]}}},
    )
    outcome = run_sweep(load_sweep(path), tmp_path / "out")
    rows = read_rows(tmp_path / "out" / "results.parquet")
    assert sorted(r["method"] for r in rows) == ["magnitude", "ovit"]
    assert outcome.counts["finished"] == 2
    with pytest.raises(FileExistsError, match="already holds the finished sweep 't'; pass --resume"):
        run_sweep(load_sweep(path), tmp_path / "out")
