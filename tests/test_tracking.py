import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ovit_ray.orchestration.common.net import free_port
from ovit_ray.orchestration.common.secrets import is_secret_key
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.store import OFFLINE_PREFIX, RUN_KEY_TAG, flatten_params, git_commit


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    return Tracker(tmp_path_factory.mktemp("job"), "exp")


def test_secret_filter_and_flattening():
    assert is_secret_key("hf_token") and is_secret_key("apiKey") and is_secret_key("db.password")
    assert not is_secret_key("block_size") and not is_secret_key("monkey_patch")
    flat = flatten_params({"lr": 0.1, "opt": {"name": "adam", "api_key": "x"}, "dims": [1, 2], "s": "a"})
    assert flat == {"lr": "0.1", "opt.name": "adam", "dims": "[1, 2]", "s": "a"}


def test_git_commit_never_fails(tmp_path):
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "missing") is None


def test_round_trip_in_embedded_sqlite(tracker, tmp_path):
    run_id = tracker.start_run(
        "r1",
        params={"lr": 0.1, "opt": {"name": "adam"}, "hf_token": "s3cr3t"},
        tags={"stage": "prune", "password": "p"},
    )
    tracker.log_metrics(run_id, {"top1": 0.5, "loss": 1.5}, step=0)
    tracker.log_metrics(run_id, {"top1": 0.7}, step=1)
    art = tmp_path / "summary.json"
    art.write_text("{}")
    tracker.log_artifact(run_id, art)
    tracker.end_run(run_id)

    assert tracker.uri == f"sqlite:///{tracker.out_dir / 'mlflow.db'}"
    assert (tracker.out_dir / "mlflow.db").exists()
    run = tracker.client.get_run(run_id)
    assert run.data.params == {"lr": "0.1", "opt.name": "adam"}
    assert run.data.tags["stage"] == "prune" and "password" not in run.data.tags
    assert run.data.tags.get("mlflow.source.git.commit") == git_commit()
    history = tracker.client.get_metric_history(run_id, "top1")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.7)]
    assert run.info.status == "FINISHED"
    # Stored relative to the store: the folder can move and a server on it still serves the artifact.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert list((tracker.out_dir / "artifacts").rglob("summary.json"))
    experiment = tracker.client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert not tracker.outbox.exists()


def test_child_run_is_nested(tracker):
    parent = tracker.start_run("sweep")
    child = tracker.start_run("trial-0", parent_run_id=parent, tags={"trial": "0"})
    assert tracker.client.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert tracker.find_run({"mlflow.parentRunId": parent}) == child


def test_resume_by_run_key_reuses_run(tracker):
    first = tracker.start_run("job", params={"seed": 1}, run_key="job-42")
    tracker.end_run(first, "FAILED")
    again = tracker.start_run("job", params={"seed": 1}, run_key="job-42")  # same param value: fine
    assert again == first
    assert tracker.client.get_run(first).info.status == "RUNNING"
    exp = tracker.client.get_experiment_by_name("exp").experiment_id
    assert len(tracker.client.search_runs([exp], f"tags.`{RUN_KEY_TAG}` = 'job-42'")) == 1
    assert tracker.start_run("job", run_id=first) == first
    with pytest.raises(MlflowException, match="seed"):
        tracker.log_params(first, {"seed": 2})
    with pytest.raises(ValueError, match="status"):
        tracker.end_run(first, "DONE")


def _start_server(port: int, store_uri: str, root: Path) -> subprocess.Popen:
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += [
        "--backend-store-uri",
        store_uri,
        "--artifacts-destination",
        str(root / "art"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError("mlflow server did not start")


@pytest.mark.slow  # starts a real MLflow server
def test_outbox_while_server_down_then_flush_into_real_server(tracker, tmp_path, caplog):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    t = Tracker(tmp_path / "job", "sweep", uri=uri)
    art = tmp_path / "ckpt.txt"
    art.write_text("weights")

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ovit_ray.orchestration.tracking.client"):
        parent = t.start_run("sweep", params={"targets": [0.5, 0.9]})
        child = t.start_run("target-0.5", parent_run_id=parent, run_key="t-0.5")
        t.log_metrics(child, {"top1": 0.5}, step=0)
        t.log_metrics(child, {"top1": 0.6}, step=1)
        t.log_metrics(child, {"top1": 0.65}, step=1)  # re-logged after a restart: last value wins
        t.log_artifact(child, art)
        t.end_run(child)
        t.end_run(parent)
    assert time.monotonic() - started < 10
    assert parent.startswith(OFFLINE_PREFIX) and child == OFFLINE_PREFIX + "t-0.5"
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    queued = t.outbox.read_text()
    assert len(queued.splitlines()) == 9

    proc = _start_server(port, tracker.uri, tmp_path / "server")  # reuse a migrated DB: faster start
    try:
        assert t.flush_outbox() == 8  # the two step-1 points collapse into one
        assert not t.outbox.exists()
        # A second replay of the same file (e.g. a crash before the outbox was removed) adds nothing.
        t.outbox.write_text(queued)
        assert Tracker(tmp_path / "job", "sweep", uri=uri).flush_outbox() == 8

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("sweep").experiment_id
        runs = {r.info.run_name: r for r in client.search_runs([exp])}
        assert set(runs) == {"sweep", "target-0.5"}
        real_parent, real_child = runs["sweep"].info.run_id, runs["target-0.5"].info.run_id
        assert t.real_run_id(parent) == real_parent and t.real_run_id(child) == real_child
        assert runs["target-0.5"].data.tags["mlflow.parentRunId"] == real_parent
        assert runs["sweep"].data.params == {"targets": "[0.5, 0.9]"}
        history = client.get_metric_history(real_child, "top1")
        assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (1, 0.65)]
        assert {r.info.status for r in runs.values()} == {"FINISHED"}
        assert [a.path for a in client.list_artifacts(real_child)] == ["ckpt.txt"]
        # Back online: calls with the offline id now reach the server directly.
        t.log_metrics(child, {"top1": 0.7}, step=2)
        assert len(client.get_metric_history(real_child, "top1")) == 3 and not t.outbox.exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp_path / "server", ignore_errors=True)


def test_rejected_replay_is_set_aside(tracker, tmp_path, caplog):
    t = Tracker(tmp_path, "exp", uri=tracker.uri)
    t.outbox.write_text(
        json.dumps({"op": "end_run", "run_id": OFFLINE_PREFIX + "never", "status": "FINISHED", "end_time": 0})
        + "\n"
    )
    with caplog.at_level(logging.WARNING):
        assert t.flush_outbox() == 0
    assert not t.outbox.exists()
    assert "never" in Path(f"{t.outbox}.rejected").read_text()
