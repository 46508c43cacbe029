"""A real `mlflow server` on a free loopback port: nested runs over HTTP, and an outage mid-way
that the Tracker's outbox absorbs and replays after the restart."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from ovit_ray.cli.main import main
from ovit_ray.orchestration.common.net import free_port, port_in_use
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.server import MlflowServer


@pytest.mark.slow  # starts a real MLflow server twice (a minute or two on 2 busy cores)
def test_parent_and_children_over_http_survive_a_server_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = MlflowServer(tmp_path / "mlflow").start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        tracker = Tracker(tmp_path / "out", "sweep", server.url, offline_retry_s=0.0)
        parent = tracker.start_run("sweep", {"model": "digits-vit"})
        children = [
            tracker.start_run(f"trial-{i}", {"sparsity": 0.5 + 0.1 * i}, parent_run_id=parent)
            for i in range(2)
        ]
        tracker.log_metrics(children[0], {"top1": 0.9}, step=0)

        server.stop()  # outage: calls go to the outbox, training would go on
        with caplog.at_level(logging.WARNING):
            tracker.log_metrics(children[0], {"top1": 0.95}, step=1)
            tracker.end_run(children[0])
        assert "unreachable" in caplog.text and tracker.outbox.exists()

        server.start()  # same folder, same port
        tracker.log_metrics(children[1], {"top1": 0.8}, step=0)  # flushes the outbox first
        for run_id in (children[1], parent):
            tracker.end_run(run_id)
        assert not tracker.outbox.exists()

        client = MlflowClient(server.url)
        runs = {
            r.info.run_name: r
            for r in client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
        }
        assert set(runs) == {"sweep", "trial-0", "trial-1"}
        assert all(runs[f"trial-{i}"].data.tags["mlflow.parentRunId"] == parent for i in range(2))
        history = client.get_metric_history(children[0], "top1")
        assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.95)]
        assert {r.info.status for r in runs.values()} == {"FINISHED"}
    finally:
        server.stop()
    assert not server.ready()


@pytest.mark.slow  # starts a real MLflow server with the basic-auth app
def test_basic_auth_rejects_anonymous_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", "test-secret-key")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "test-admin-password")
    with MlflowServer(tmp_path / "mlflow", auth=True) as server:
        url = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(url, timeout=60).status_code == 401
        ok = requests.get(url, auth=("admin", "test-admin-password"), timeout=60)
        assert ok.status_code == 200
    assert "test-admin-password" not in (tmp_path / "mlflow" / "server.log").read_text()
    assert "test-admin-password" not in (tmp_path / "mlflow" / "basic_auth.ini").read_text()


def test_cli_refuses_public_bind_and_auth_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mlflow-server", "--dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    assert main(["mlflow-server", "--dir", str(tmp_path), "--auth"]) == 2
    err = capsys.readouterr().err
    assert "--allow-public" in err and "MLFLOW_AUTH_ADMIN_PASSWORD" in err


def test_a_busy_port_is_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        began = time.monotonic()
        assert main(["mlflow-server", "--dir", str(tmp_path / "m"), "--port", str(port)]) == 2
        assert time.monotonic() - began < 10
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        f"port {port} on 127.0.0.1 is in use" in line and "--port" in line and not (tmp_path / "m").exists()
    )


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def _group(pgid: int) -> list[int]:
    """Live processes of a process group (Linux /proc)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and "(Z)" not in (entry / "stat").read_text():
                    alive.append(int(entry.name))
            except (ProcessLookupError, OSError):
                pass
    return alive


@pytest.mark.slow  # starts a real MLflow server
def test_a_port_taken_after_the_check_is_caught_not_served_by_someone_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another server answering /health on our port (taken between our check and MLflow's bind) is not
    mistaken for ours: start() fails naming the port and leaves none of its processes behind."""
    import ovit_ray.orchestration.tracking.server as server_module

    other = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    monkeypatch.setattr(server_module, "port_in_use", lambda port, host: False)  # the race: it looked free
    server = MlflowServer(tmp_path / "m", port=other.server_address[1])
    try:
        with pytest.raises(OSError, match=f"{other.server_address[1]}.*another process"):
            server.start()
        assert server.proc is None
    finally:
        server.stop()
        other.shutdown()


@pytest.mark.slow  # starts `ovit-ray mlflow-server` in a subprocess (a minute on 2 busy cores)
def test_kill_9_of_the_command_takes_the_server_and_its_children_with_it(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ovit_ray.cli.main",
            "mlflow-server",
            "--dir",
            str(tmp_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "MLflow server at" in line, line
        children = [pid for pid in _group_of_port(port) if pid != proc.pid]
        assert children, "no server process found"
        pgid = os.getpgid(children[0])
        proc.kill()  # kill -9: no handler, no finally
        proc.wait(10)
        deadline = time.monotonic() + 30
        while (_group(pgid) or port_in_use(port)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _group(pgid) and not port_in_use(port), _group(pgid)
    finally:
        proc.kill()


def _group_of_port(port: int) -> list[int]:
    """The processes whose group holds the listening socket on ``port`` (Linux /proc)."""
    from ovit_ray.orchestration.common.net import listening_pids

    pids = listening_pids(port)
    assert pids, port
    return _group(os.getpgid(next(iter(pids))))
