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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ovit_ray.orchestration.common.net import (
    LOOPBACK,
    binds_all_interfaces,
    free_port,
    listening_pids,
    port_in_use,
    wait_until,
)
from ovit_ray.orchestration.common.process import GroupProcess
from ovit_ray.orchestration.common.stores import check_own_database, sqlite_url

# Read from the environment only (never flags, never logs): MLflow's own variable names.
AUTH_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


@dataclass
class MlflowServer(GroupProcess):
    """``mlflow server`` for ``folder``: ``mlflow.db`` and ``artifacts/`` (and ``basic_auth.db``)."""

    folder: Path
    host: str = LOOPBACK
    port: int = 0  # 0: a free port, chosen once (so a restart reuses it)
    auth: bool = False

    def __post_init__(self) -> None:
        GroupProcess.__init__(self)
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
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        cmd = [mlflow, "server", "--backend-store-uri", self.store_uri]
        cmd += ["--artifacts-destination", str(self.folder / "artifacts")]
        cmd += ["--host", self.host, "--port", str(self.port), "--workers", "1"]
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
        proc = self.spawn(self.command(), self.log, env=env, cwd=self.folder)
        try:
            wait_until(lambda: self.ready() or not self.running(), timeout_s, f"MLflow at {self.url}")
        except TimeoutError:
            self.stop()
            raise
        if not self.running():
            raise RuntimeError(f"mlflow server exited with {proc.returncode}; see {self.log}")
        if not self._owns_port(proc.pid):
            self.stop()
            raise OSError(
                f"port {self.port} on {host} is answered by another process, not this server (it took "
                "the port while the server started); choose another --port"
            )
        return self

    def _owns_port(self, group: int) -> bool:
        """A process of process group `group` holds the listening socket (True where that cannot be told)."""
        pids = listening_pids(self.port)
        if pids is None:
            return True
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == group:
                    return True
        return False

    def ready(self) -> bool:
        import requests  # not at `ovit-ray --help` time

        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """The process group stopped, then a worker outliving its master waited for; idempotent."""
        if self.proc is None:
            return
        pid = self.proc.pid
        self.stop_group(grace_s)
        deadline = time.monotonic() + grace_s
        while self.ready() and self._owns_port(pid) and time.monotonic() < deadline:
            time.sleep(0.2)

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
