"""A real MLflow tracking server (SQLite + artifacts in one folder), started, awaited and stopped.

Used by ``ovit-ray mlflow-server`` and by tests that need a server on a free loopback port (and
fault-injection tests that stop it mid-sweep and start it again on the same port and folder).
Loopback by default: MLflow has no authentication unless the basic-auth app is on, and even then
the server should sit behind the cluster's private network, not the internet.

The port is ours or the start fails (issue 24.12): a busy port is refused before anything starts, and
a server answering on the port is checked to be ours (a process of our group holds the listening
socket), since another one taking the port in between would otherwise serve its own folder at our URL.
MLflow runs uvicorn, a job runner and its consumers as children; a small watchdog leads their process
group and takes all of them down when the process that started it is gone, even by `kill -9`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ovit_ray.orchestration.common.net import (
    LOOPBACK,
    binds_all_interfaces,
    free_port,
    listening_pids,
    port_in_use,
    wait_until,
)
from ovit_ray.orchestration.common.stores import check_own_database, sqlite_url

# Read from the environment only (never flags, never logs): MLflow's own variable names.
AUTH_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")
# Leads the server's process group: runs the command given after the expected parent's pid and, once
# that parent is gone (polled: portable, even after SIGKILL), stops the whole group. A stop signal
# from the parent reaches the whole group anyway; then it only waits for the server.
WATCHDOG = """
import os, signal, subprocess, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
child = subprocess.Popen(sys.argv[2:])
while child.poll() is None and not stop:
    if os.getppid() != int(sys.argv[1]):
        os.killpg(0, signal.SIGTERM)
    time.sleep(0.5)
try:
    child.wait(10)
except subprocess.TimeoutExpired:
    os.killpg(0, signal.SIGKILL)
os.killpg(0, signal.SIGTERM)
sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
"""


@dataclass
class MlflowServer:
    """``mlflow server`` for ``folder``: ``mlflow.db`` and ``artifacts/`` (and ``basic_auth.db``)."""

    folder: Path
    host: str = LOOPBACK
    port: int = 0  # 0: a free port, chosen once (so a restart reuses it)
    auth: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).resolve()
        self.port = self.port or free_port(LOOPBACK if binds_all_interfaces(self.host) else self.host)

    @property
    def url(self) -> str:
        host = LOOPBACK if binds_all_interfaces(self.host) else self.host
        return f"http://{host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def store_uri(self) -> str:
        return sqlite_url(self.folder / "mlflow.db")

    def command(self) -> list[str]:
        """`mlflow server` on this folder, run by the watchdog (which needs to know its parent)."""
        cmd = [
            sys.executable,
            "-c",
            WATCHDOG,
            str(os.getpid()),
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            self.store_uri,
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        # our app opens MLflow in its training view (tracking.ui_app); with auth, MLflow's basic-auth app
        return cmd + ["--app-name", "basic-auth" if self.auth else "ovit-ray"]

    def env(self) -> dict[str, str]:
        """With auth: MLflow's auth config points at this folder; secrets must be in the environment."""
        if not self.auth:
            return dict(os.environ)
        missing = [name for name in AUTH_ENV if not os.environ.get(name)]
        if missing:
            raise ValueError(f"--auth needs these environment variables set: {', '.join(missing)}")
        ini = self.folder / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {sqlite_url(self.folder / 'basic_auth.db').replace('%', '%%')}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}

    def start(self, timeout_s: float = 180.0) -> MlflowServer:
        """Start in its own process group and wait until ``/health`` answers (7 s idle, a minute
        or more on a loaded 2-core machine). Already running: nothing to do (a second process
        would fail to bind and leave the first one without an owner). A `mlflow.db` that is not an
        MLflow store and a port someone else holds are refused (one line each)."""
        if self.running():
            return self
        check_own_database(self.store_uri, "mlflow", "--dir")
        host = LOOPBACK if binds_all_interfaces(self.host) else self.host
        if port_in_use(self.port, host):
            raise OSError(f"port {self.port} on {host} is in use by another process; choose another --port")
        self.folder.mkdir(parents=True, exist_ok=True)
        env = self.env()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                env=env,
                cwd=self.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # gunicorn/uvicorn workers: stop() signals the whole group
            )
        try:
            wait_until(lambda: self.ready() or not self.running(), timeout_s, f"MLflow at {self.url}")
        except TimeoutError:
            self.stop()
            raise
        if not self.running():
            raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; see {self.log}")
        if not self._owns_port():
            self.stop()
            raise OSError(
                f"port {self.port} on {host} is answered by another process, not this server (it took "
                "the port while the server started); choose another --port"
            )
        return self

    def _owns_port(self) -> bool:
        """A process of the server's group holds the listening socket (True where that cannot be told)."""
        pids = listening_pids(self.port)
        if pids is None or self.proc is None:
            return True
        groups = set()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        return self.proc.pid in groups

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        import requests  # not at `ovit-ray --help` time

        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def wait(self) -> int:
        """Block until the server exits (foreground use); its exit code."""
        assert self.proc is not None, "start() first"
        return self.proc.wait()

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace_s``; idempotent."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
                break
        deadline = time.monotonic() + grace_s
        # a worker outliving its master
        while self.ready() and self._owns_port() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
