"""The sweep output folder contract: whose folder it is, who writes it now, and whether it can resume.

Why: a sweep writes `sweep.yaml`, `plots/`, `results.parquet`, `mlflow.db`, `ray/` into its folder.
Started on a folder of someone else's files it would overwrite them; two drivers on one folder
would run trials twice; a broken `results.parquet` or MLflow store found only after the trials ran
loses their work. So, before Ray starts:

- a folder is used only if it is new, empty, or an ovit-ray sweep folder (`sweep.json`);
- `.ovit-ray.lock` is held (`flock`) for the driver's life, with the holder's PID inside; the kernel
  releases it when the process dies, so a killed sweep never leaves a stale lock;
- a resume checks `sweep.json`, the sweep file copy, `results.parquet` (readable, right key columns),
  the local MLflow store and Tune's experiment state;
- `sweep.json` records the folder's absolute path: when a copied or moved folder resumes, the
  locations stored inside it (MLflow experiment and run artifact URIs) are rewritten to the new place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.atomic import write_json_atomic
from ovit_ray.orchestration.results import RESULTS_FILE

STATE_FILE = "sweep.json"
SWEEP_COPY = "sweep.yaml"
LOCK_FILE = ".ovit-ray.lock"
MLFLOW_DB = "mlflow.db"
ARTIFACTS = "mlartifacts"
RESULTS_KEYS = ("trial_id", "strategy", "target_sparsity")  # what a sweep's result rows are keyed by
_STATE_KEYS = {"name", "sweep_id", "fingerprint"}


class FolderLock:
    """An exclusive `flock` on `<folder>/.ovit-ray.lock` (PID inside); a second holder is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by Ray's processes
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FileExistsError(
                f"{self.path.parent} is in use by another ovit-ray process (pid {holder}); "
                "wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_state(out: Path) -> dict[str, Any] | None:
    """`sweep.json` of `out` (None when there is none); a damaged one is a ValueError naming it."""
    path = out / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path}: damaged ({' '.join(str(err).split())[:200]}); this folder cannot be "
            "resumed, choose another --out"
        ) from None
    if not isinstance(state, dict) or not _STATE_KEYS <= set(state):
        raise ValueError(
            f"{path}: damaged (not an ovit-ray sweep state: needs {sorted(_STATE_KEYS)}); "
            "choose another --out"
        )
    return state


def write_state(out: Path, state: dict[str, Any]) -> None:
    write_json_atomic(out / STATE_FILE, state)


def check_folder(out: Path, name: str, fingerprint: str, resume: bool) -> dict[str, Any]:
    """The sweep state to run with; refuses a foreign folder, a finished or different sweep, or a
    resume with nothing to resume. Reads only: safe for `--dry-run`."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out must be a folder, got a file: {out}")
    state = read_state(out)
    if state is None:
        foreign = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise FileExistsError(
                f"{out} is not empty and is not an ovit-ray sweep folder (holds {shown}); "
                "choose a new or empty --out"
            )
        if resume:
            raise FileNotFoundError(f"nothing to resume in {out} (no {STATE_FILE})")
        return {
            "name": name,
            "sweep_id": uuid.uuid4().hex[:12],
            "fingerprint": fingerprint,
            "finished": False,
            "interrupted": False,
            "folder": str(out),
        }
    if not resume:
        status = (
            "finished"
            if state.get("finished")
            else "interrupted"
            if state.get("interrupted")
            else "unfinished"
        )
        raise FileExistsError(
            f"{out} already holds the {status} sweep {state['name']!r}; pass --resume to "
            "continue it (finished results are kept), or choose another --out"
        )
    if state["fingerprint"] != fingerprint:
        raise ValueError(
            f"{out} holds sweep {state['name']!r} started from a different sweep file "
            f"(see {out / SWEEP_COPY}); resume it with that file or choose another --out"
        )
    _check_resumable(out)
    return state


def _check_resumable(out: Path) -> None:
    """Everything a resume reads, before Ray starts (a broken file found later loses the trials' work)."""
    if not (out / SWEEP_COPY).is_file():
        raise FileNotFoundError(f"{out / SWEEP_COPY} is missing: this folder cannot be resumed")
    results = out / RESULTS_FILE
    if results.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = set(pq.read_schema(results).names)
            pq.ParquetFile(results).read(columns=list(RESULTS_KEYS))
        except (OSError, ValueError, pa.ArrowException) as err:
            raise ValueError(
                f"{results}: unreadable ({' '.join(str(err).split())[:200]}); move it away "
                "to resume without its rows"
            ) from None
        missing = sorted(set(RESULTS_KEYS) - names)
        if missing:
            raise ValueError(
                f"{results}: not a sweep's results (no column(s) {missing}); move it away to resume"
            )
    db = out / MLFLOW_DB
    if db.exists():
        try:
            with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
                conn.execute("SELECT experiment_id, artifact_location FROM experiments LIMIT 1").fetchall()
        except sqlite3.Error as err:
            raise ValueError(f"{db}: not a readable MLflow store ({err})") from None
    states = sorted((out / "ray").glob("*/experiment_state-*.json"))
    if states:
        try:
            json.loads(states[-1].read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{states[-1]}: Tune's experiment state is damaged ({str(err)[:200]})") from None


def relocate(out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """After a copy or move: rewrite the old folder's path inside the local MLflow store so new
    artifacts land here, never in the old folder. Returns the state with the new folder recorded."""
    old = state.get("folder")
    if old is None or old == str(out):
        return {**state, "folder": str(out)}
    db = out / MLFLOW_DB
    if db.exists():
        old_uri, new_uri = (Path(old) / ARTIFACTS).as_uri(), (out / ARTIFACTS).as_uri()
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute(
                "UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                "WHERE substr(artifact_location, 1, ?) = ?",
                (new_uri, len(old_uri) + 1, len(old_uri), old_uri),
            )
            conn.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                "WHERE substr(artifact_uri, 1, ?) = ?",
                (new_uri, len(old_uri) + 1, len(old_uri), old_uri),
            )
    return {**state, "folder": str(out)}
