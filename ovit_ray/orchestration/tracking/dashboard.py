"""optuna-dashboard over a sweep folder's Optuna study, on loopback, started and stopped like the MLflow
server: its named objectives and each trial's top-1 at every target (the intermediate values the sweep's
searcher records, step = target in %) make its curves. optuna-dashboard is an optional extra."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from ovit_ray.orchestration.common.net import LOOPBACK, port_in_use, wait_until
from ovit_ray.orchestration.common.process import GroupProcess
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


class Dashboard(GroupProcess):
    """`optuna-dashboard STORAGE --host 127.0.0.1 --port PORT` in its own process group."""

    def __init__(self, folder: str | os.PathLike, port: int = 8080) -> None:
        super().__init__()
        self.folder, self.port = Path(folder).resolve(), port

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
        log = self.folder / "dashboard.log"
        proc = self.spawn([str(binary), storage, "--host", LOOPBACK, "--port", str(self.port)], log)
        wait_until(
            lambda: port_in_use(self.port, LOOPBACK) or not self.running(),
            timeout_s,
            f"optuna-dashboard at {self.url}",
        )
        if not self.running():
            raise RuntimeError(f"optuna-dashboard exited with {proc.returncode}; see {log}")
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        self.stop_group(grace_s)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
