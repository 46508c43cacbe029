"""A real MLflow tracking server (SQLite + artifacts in one folder), started, awaited and stopped.

Used by ``ovit-ray mlflow-server`` and by tests that need a server on a free loopback port (and
fault-injection tests that stop it mid-sweep and start it again on the same port and folder).
Loopback by default: MLflow has no authentication unless the basic-auth app is on, and even then
the server should sit behind the cluster's private network, not the internet.
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

from ovit_ray.orchestration.common.net import LOOPBACK, binds_all_interfaces, free_port, wait_until

# Read from the environment only (never flags, never logs): MLflow's own variable names.
AUTH_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD")


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

    def command(self) -> list[str]:
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.folder / "artifacts"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        return cmd + (["--app-name", "basic-auth"] if self.auth else [])

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
            f"database_uri = sqlite:///{self.folder / 'basic_auth.db'}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini)}

    def start(self, timeout_s: float = 180.0) -> MlflowServer:
        """Start in its own process group and wait until ``/health`` answers (7 s idle, a minute
        or more on a loaded 2-core machine). Already running: nothing to do (a second process
        would fail to bind and leave the first one without an owner)."""
        if self.running():
            return self
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
        return self

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
        while self.ready() and time.monotonic() < deadline:  # a worker outliving its master
            time.sleep(0.2)
        self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
