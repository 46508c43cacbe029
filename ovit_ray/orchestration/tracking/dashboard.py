"""optuna-dashboard over a sweep folder's Optuna study, on loopback, started and stopped like the MLflow
server: its named objectives and each trial's top-1 at every target (the intermediate values the sweep's
searcher records, step = target in %) make its curves. optuna-dashboard is an optional extra."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ovit_ray.orchestration.common.net import LOOPBACK, port_in_use, wait_until
from ovit_ray.orchestration.common.stores import check_own_database, sqlite_url

__all__ = ["Dashboard", "study_storage"]

STUDY_FILE = "optuna.db"  # the folder's own study (tune.folder keeps the same name)


def study_storage(folder: Path) -> str:
    """The study a sweep folder keeps: its `--optuna-storage` as recorded, else its own `optuna.db`."""
    state = folder / "sweep.json"
    recorded = json.loads(state.read_text()).get("optuna_storage") if state.is_file() else None
    if recorded:
        return str(recorded)
    if not (folder / STUDY_FILE).is_file():
        raise FileNotFoundError(f"{folder} holds no Optuna study ({STUDY_FILE}): only Optuna sweeps keep one")
    return sqlite_url(folder / STUDY_FILE)


class Dashboard:
    """`optuna-dashboard STORAGE --host 127.0.0.1 --port PORT` in its own process group."""

    def __init__(self, folder: str | os.PathLike, port: int = 8080) -> None:
        self.folder, self.port = Path(folder).resolve(), port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = 120.0) -> Dashboard:
        if importlib.util.find_spec("optuna_dashboard") is None:
            raise ValueError("optuna-dashboard is not installed: pip install 'ovit-ray[dashboard]'")
        storage = study_storage(self.folder)
        check_own_database(storage, "optuna", "the folder's study")
        if port_in_use(self.port, LOOPBACK):
            raise OSError(
                f"port {self.port} on {LOOPBACK} is in use by another process; choose another --port"
            )
        binary = Path(sys.executable).with_name("optuna-dashboard")
        with open(self.folder / "dashboard.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(binary), storage, "--host", LOOPBACK, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_until(
            lambda: port_in_use(self.port, LOOPBACK) or self.proc is None or self.proc.poll() is not None,
            timeout_s,
            f"optuna-dashboard at {self.url}",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"optuna-dashboard exited with {self.proc.returncode}; see {self.folder / 'dashboard.log'}"
            )
        return self

    def wait(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.wait()

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
                break
        self.proc = None

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
