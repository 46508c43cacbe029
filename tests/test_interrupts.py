"""Real signals to real processes: Ctrl-C / SIGTERM on `ovit-ray sweep` and `ovit-ray mlflow-server`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.orchestration.cluster.local import group_processes
from ovit_ray.orchestration.common.net import free_port, port_in_use, wait_until
from ovit_ray.orchestration.common.stores import default_tracking_uri
from ovit_ray.orchestration.results.parquet import read_rows

ROOT = Path(__file__).resolve().parents[1]
GRADUAL = {"targets": [0.75], "window_epochs": 3, "num_grads": 16, "block_size": 32}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    # the toy kind of tests/test_experiment_kinds.py is importable: trials that wait for a file the test makes
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "ovit_ray.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={
            **os.environ,
            "OVIT_RAY_SEARCH_SPACES": str(ROOT / "search_spaces"),
            "PYTHONPATH": path,
            **(env or {}),
        },
    )


@pytest.mark.slow  # starts a real MLflow server in a child process
def test_sigterm_stops_the_mlflow_server_and_frees_its_port(tmp_path: Path) -> None:
    port = free_port()
    proc = _cli("mlflow-server", "--dir", str(tmp_path / "m"), "--port", str(port))
    try:
        wait_until(lambda: port_in_use(port) or proc.poll() is not None, 240, "the MLflow server")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
        assert not port_in_use(port) and not group_processes(proc.pid)  # nothing left holding the port
        assert "interrupted (SIGTERM)" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _runs(out: Path) -> dict[str, str]:
    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name("ovit-ray-sweeps")
    return {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_marks_the_sweep_interrupted_and_a_moved_copy_resumes_in_place(
    tmp_path: Path, digits_preset: Path
) -> None:
    """Ctrl-C (SIGINT to the process group) after one trial, while the next one waits for a file: exit 130,
    sweep.json and MLflow say interrupted, nothing RUNNING, no Ray process left; Tune gets no AWS key; a second
    writer is refused; the folder copied to a path with %, ?, #, spaces and unicode resumes there."""
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "imports": ["test_experiment_kinds"],
                "toy": {"folder": str(tmp_path), "hold": True},
                "search": {"params": {"value": {"grid": [0, 1, 2]}}, "max_concurrent_trials": 1},
                "resources": {"cpus_per_worker": 0.5},
            }
        )
    )
    (tmp_path / "release-0").touch()  # the first trial runs through; the others wait until the resume
    out = tmp_path / "out"
    ray_tmp = Path(os.path.realpath("/tmp")) / f"oi{os.getpid()}"
    env = {
        "OVIT_RAY_CACHE": str(digits_preset.parent),
        "AWS_SECRET_ACCESS_KEY": "sekrit-4711",
        "RAY_TMPDIR": str(ray_tmp),
    }
    proc = _cli("sweep", str(sweep), "--out", str(out), env=env)
    try:
        # The lock is taken before sweep.json is written. The second writer is tried before the first
        # trial ends, so that the Ctrl-C below reaches a sweep that still has trials to run.
        wait_until(lambda: (out / "sweep.json").exists() or proc.poll() is not None, 600, "the sweep")
        second = _cli("sweep", str(sweep), "--out", str(out), "--resume", env=env)
        assert second.wait(120) == 2 and f"pid {proc.pid}" in second.stderr.read()
        wait_until(
            lambda: (tmp_path / "started-0").exists() or proc.poll() is not None, 600, "the first trial"
        )
        wait_until(
            lambda: (out / "trials.parquet").exists() or proc.poll() is not None, 600, "a finished trial"
        )
        wait_until(
            lambda: (tmp_path / "started-1").exists() or proc.poll() is not None, 600, "the next trial"
        )
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(180) == 130
        err = proc.stderr.read()
        assert "interrupted (Ctrl-C)" in err and "--resume" in err
        assert not group_processes(proc.pid)  # the embedded Ray instance went with it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    state = json.loads((out / "sweep.json").read_text())
    assert state["interrupted"] and not state["finished"]
    runs = _runs(out)
    assert runs["t (sweep)"] == "KILLED" and "RUNNING" not in runs.values() and "FINISHED" in runs.values()
    logs = "".join(p.read_text(errors="replace") for p in ray_tmp.rglob("*.log") if p.is_file())
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert logs and "sekrit-4711" not in logs
    assert _cli("sweep", str(sweep), "--out", str(out), env=env).wait(120) == 2  # interrupted, not finished

    (tmp_path / "release").touch()
    moved = tmp_path / "moved 100%20 ?x #y ü"
    shutil.copytree(out, moved)
    before = sorted(r["trial_id"] for r in read_rows(out / "results.parquet"))
    started = (tmp_path / "started-0").read_text()
    old_tree = sorted(p.relative_to(out) for p in out.rglob("*"))
    resumed = _cli("sweep", str(sweep), "--out", str(moved), "--resume", env=env)
    assert resumed.wait(600) == 0, resumed.stderr.read()[-3000:]
    assert sorted(r["trial_id"] for r in read_rows(out / "results.parquet")) == before  # old copy untouched
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == old_tree  # not even a new trial folder
    assert (
        len(read_rows(moved / "results.parquet")) == 6  # two targets per trial
        and json.loads((moved / "sweep.json").read_text())["finished"]
    )
    assert (tmp_path / "started-0").read_text() == started  # the finished trial did not run again
    assert set(_runs(moved).values()) == {"FINISHED"} and len(_runs(moved)) == 4


@pytest.mark.ray
@pytest.mark.slow
def test_second_ctrl_c_and_sigterm_stop_at_once(tmp_path: Path, digits_preset: Path) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "model": "digits-vit",
                "gradual": {**GRADUAL, "window_epochs": 50},
            }
        )
    )
    env = {"OVIT_RAY_CACHE": str(digits_preset.parent)}
    for signals, code in (([signal.SIGINT, signal.SIGINT], 130), ([signal.SIGTERM], 143)):
        out = tmp_path / f"out{code}"
        proc = _cli("sweep", str(sweep), "--out", str(out), env=env)
        try:
            wait_until(
                lambda o=out, p=proc: list((o / "ray").glob("t-*/*/checkpoint_*")) or p.poll() is not None,
                600,
                "a trial checkpoint",
            )
            for sig in signals:
                os.kill(proc.pid, sig)
                time.sleep(0.5)
            began = time.monotonic()
            assert proc.wait(120) == code, proc.stderr.read()[-3000:] if proc.stderr else ""
            assert time.monotonic() - began < 90  # not the 50 epochs
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert json.loads((out / "sweep.json").read_text())["interrupted"]
        assert "RUNNING" not in _runs(out).values() and _runs(out)["t (sweep)"] == "KILLED"
