"""Real local Ray sweeps on the digits preset: Optuna + MLflow + Parquet, a grid run once, interrupt and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.specs.knob_labels import short_value
from ovit_ray.orchestration.tune.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]
TRAIN = {"model": "digits-vit", "targets": [0.5, 0.75], "window_epochs": 1, "num_grads": 16}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))


def _sweep_file(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "train": TRAIN, **fields}))
    return path


def test_pruned_aware_optuna_tells_stopped_trials_as_pruned() -> None:
    from ovit_ray.orchestration.tune.optuna_pruned import PrunedAwareOptuna

    search = PrunedAwareOptuna(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="top1_final", mode="max", seed=0
    )
    for trial_id in ("a", "b"):
        search.suggest(trial_id)
    search.on_trial_complete("a", {"top1": 0.3, "training_iteration": 2, "top1_final": 0.3})
    search.on_trial_complete("b", {"top1_final": 0.9, "trial_complete": 1})
    states = [t.state for t in search._ot_study.trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]


def test_optuna_sweep_writes_parquet_and_nested_mlflow_runs(tmp_path: Path) -> None:
    path = _sweep_file(
        tmp_path,
        search={
            "space": "quickstart",
            "algorithm": "optuna",
            "num_samples": 2,
            "overrides": {"block_size": {"choice": [16, 32]}, "num_grads": 16, "lr_schedule": "cosine"},
        },
        mlflow={"experiment": "sweep-test"},
    )
    out_dir = tmp_path / "out"
    outcome = run_sweep(path, out_dir)
    assert outcome.totals["trials_finished"] == 2 and outcome.totals["trials_failed"] == 0
    rows = read_rows(tmp_path / "out" / "results.parquet")
    assert len(rows) == 4 and len({(r["trial_id"], r["target_sparsity"]) for r in rows}) == 4
    for r in rows:
        assert r["strategy"] == "sweep" and r["block_size"] in (16, 32) and 1e-9 <= r["damp"] <= 1e-5
        assert abs(r["achieved_sparsity"] - r["target_sparsity"]) < 1e-6 and 0 < r["top1"] <= 1
        assert r["flops_nonzero"] < r["flops_dense"] and r["trial_cpu_hours"] > 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-test")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("ovit.kind") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(children) == 2
    assert parent.data.metrics["trials_finished"] == 2 and parent.data.metrics["epochs_total"] == 4
    assert "gpu_hours_total" in parent.data.metrics and parent.data.params["search.algorithm"] == "optuna"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not MLflow's GenAI layout
    # Artifacts are stored relative to the store (mlflow-artifacts:), in artifacts/ next to mlflow.db (what `ovit-ray mlflow-server --dir` serves).
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:/sweep-test/")
    stored = out_dir / "artifacts" / parent.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    assert {"sweep.yaml", "best_config.json", "plots"} <= {p.name for p in stored.iterdir()}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["pruned"] == "false"
        params = child.data.params
        assert {"damp", "block_size", "num_grads", "lr_schedule", "strategy"} <= set(params)
        assert not {"final_sparsity", "end_epoch", "checkpoint", "pattern"} & set(params)  # unused or None
        assert "null" not in params.values() and "None" not in params.values()
        assert child.info.run_name == (
            f"B{params['block_size']}-m16-λ{short_value(float(params['damp']))}"
            f"-lr{short_value(float(params['lr_max']))}"
        )  # searched: B, λ, lr_max
        assert {"top1_final", "top1", "sparsity", "cpu_hours"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "top1")) == 2  # one point per epoch
        frontier = client.get_metric_history(child.info.run_id, "top1_vs_sparsity")
        assert sorted(m.step for m in frontier) == [50, 75]
    trials = read_rows(out_dir / "trials.parquet")
    assert sorted(t["status"] for t in trials) == ["finished", "finished"]


def test_grid_runs_each_point_once_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = _sweep_file(
        tmp_path,
        train={**TRAIN, "targets": [0.75]},
        search={
            "space": "fixed",
            "algorithm": "grid",
            "overrides": {"method": {"grid": ["ovit", "magnitude"]}},
        },
    )
    outcome = run_sweep(path, tmp_path / "out")
    rows = read_rows(tmp_path / "out" / "results.parquet")
    assert sorted(r["method"] for r in rows) == ["magnitude", "ovit"]
    assert outcome.totals["trials_finished"] == 2
    with pytest.raises(FileExistsError, match="already holds the finished sweep 't'; pass --resume"):
        run_sweep(path, tmp_path / "out")


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    path = _sweep_file(
        tmp_path,
        train={**TRAIN, "targets": [0.75]},
        search={
            "space": "fixed",
            "algorithm": "grid",
            "max_concurrent_trials": 1,
            "overrides": {"seed": {"grid": [0, 1, 2]}},
        },
    )
    out = tmp_path / "out"
    results = out / "results.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovit_ray.cli.main", "sweep", str(path), "--out", str(out)],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not results.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
        assert results.exists(), "no trial finished in time"
        time.sleep(3)  # let Tune save its experiment state (every second)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray die without cleaning up
        proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    done_before = {r["trial_id"] for r in read_rows(results)}
    assert 1 <= len(done_before) < 3  # reused actors make trials quick: one may finish during the sleep
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (parent_before,) = [
        r.info.run_id
        for r in client.search_runs(
            [client.get_experiment_by_name("ovit-ray-sweeps").experiment_id], "tags.`ovit.kind` = 'sweep'"
        )
    ]
    outcome = run_sweep(path, out, resume=True)
    rows = read_rows(results)
    assert sorted(r["seed"] for r in rows) == [0, 1, 2] and outcome.totals["trials_finished"] == 3
    assert len({(r["trial_id"], r["target_sparsity"]) for r in rows}) == len(rows)  # no duplicate rows
    runs = client.search_runs([client.get_experiment_by_name("ovit-ray-sweeps").experiment_id])
    assert outcome.parent_run_id == parent_before  # the parent run was reused
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_before]
    assert len(runs) == 4 and sorted(r.data.tags["ovit.trial_id"] for r in children) == sorted(
        r["trial_id"] for r in rows
    )  # one child per trial, none duplicated by the resume
    assert {r.info.status for r in runs} == {"FINISHED"}
    for trial_id in done_before:  # a finished trial trained each epoch once: it was not run again
        lines = (out / "ray" / "t" / trial_id / "result.json").read_text().splitlines()
        epochs = [json.loads(line)["epoch"] for line in lines if "epoch" in json.loads(line)]
        # (Its final, checkpoint-less report may come again when the kill beat Tune's state save.)
        assert epochs and epochs == sorted(set(epochs))
