"""Tune storage as clusters use it: an S3 API (moto's standalone server) on loopback, started by this test.

A small gradual sweep keeps its Tune state and its models in the bucket; it is killed while its second trial
waits for a file (a known event, however slow the machine), its output folder is copied elsewhere and the
original deleted, the copy resumes on the same storage place, and the best model is exported from the bucket.
Credentials exist only in this test's environment, and nothing writes them down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovit_ray.knobs import knob
from ovit_ray.orchestration.kinds import register_kind
from ovit_ray.orchestration.kinds.gradual import Gradual, GradualSpec
from ovit_ray.orchestration.results.parquet import read_rows

HERE = Path(__file__).resolve().parent
SECRET = "s3-test-secret-4711"
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _hold(folder: str, seed: int, epoch: int, rank: int) -> None:
    """Seed 1 marks its start, then waits for `<folder>/release` before its first epoch."""
    if seed == 1:
        (Path(folder) / "started-1").touch()
        while not (Path(folder) / "release").exists():
            time.sleep(0.2)


class HeldSpec(GradualSpec):
    hold_dir: str = knob("", "where the held trial marks its start and waits for its release")


@register_kind
class HeldGradual(Gradual):
    """The gradual kind whose trial with seed 1 waits for a file before training."""

    name = "held-gradual"
    spec = HeldSpec

    def run(self, spec: Any, host: Any) -> None:
        from ovit_ray.training.gradual.run import train_loop

        schedule = spec.schedule()
        hook = partial(_hold, spec.hold_dir, spec.seed)
        host.train(
            train_loop,
            {"spec": spec, "schedule": schedule, "epoch_hook": hook},
            spec,
            schedule.total_epochs,
            "run0",
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A moto S3 server on loopback with a bucket; AWS_* set for this test only."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "s3-test-key",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket="ovit-sweeps")
                break
            except Exception:
                assert time.monotonic() < deadline, "moto did not start"
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def test_s3_sweep_interrupted_resumed_from_a_copied_folder_and_exported_from_the_bucket(
    s3: dict[str, str], tmp_path: Path
) -> None:
    sweep = tmp_path / "s3.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "s3",
                "imports": ["test_s3_storage"],
                "model": "digits-vit",
                "seeds": [0, 1],
                "held-gradual": {
                    "targets": [0.5],
                    "window_epochs": 1,
                    "num_grads": 16,
                    "block_size": 32,
                    "max_steps_per_epoch": 2,
                    "hold_dir": str(tmp_path),
                },
                "search": {"max_concurrent_trials": 1},
                "storage": "s3://ovit-sweeps/sweeps",
            }
        )
    )
    out = tmp_path / "first"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovit_ray.cli.main", "sweep", str(sweep), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (tmp_path / "started-1").exists():
            assert proc.poll() is None, f"the sweep ended early (exit {proc.returncode})"
            assert time.monotonic() < deadline, "the second trial did not start"
            time.sleep(0.2)
        time.sleep(2)  # Tune saves its experiment state every second
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = read_rows(out / "results.parquet")
    assert [r["seed"] for r in first] == [0] and first[0]["kept_model"].startswith("s3://ovit-sweeps/sweeps/")

    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(out)
    (tmp_path / "release").touch()
    sys.path.insert(0, str(HERE))
    from ovit_ray.cli.main import main

    assert main(["sweep", str(sweep), "--out", str(copy), "--resume"]) == 0
    rows = read_rows(copy / "results.parquet")
    assert sorted(r["seed"] for r in rows) == [0, 1] and all(
        r["kept_model"].startswith("s3://") for r in rows
    )
    assert not out.exists()  # the copy resumed on the same storage place, not by recreating the original

    best = tmp_path / "best.safetensors"
    assert main(["export", str(copy), "--out", str(best)]) == 0
    assert best.is_file()
    for path in copy.rglob("*"):  # the credentials are nowhere in what the sweep wrote
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
