"""The output folder contract: whose folder it is, who writes it now, where its Tune state lives, and
whether it can resume.

Why: a sweep writes `sweep.yaml`, `plots/`, `results.parquet`, `trials.parquet`, `mlflow.db`, `optuna.db`
and `ray/` into its folder. Started on a folder of someone else's files it would overwrite them; two drivers
on one folder would run trials twice; two sweeps of the same name on one shared storage would overwrite each
other's Tune state; a broken file found only after the trials ran loses their work. So, before Ray starts:

- a folder is used only if it is new, empty, or an ovit-ray sweep folder (`sweep.json`);
- `.ovit-ray.lock` is held (`flock`) for the driver's life, with the holder's PID inside; the kernel
  releases it when the process dies, so a killed sweep never leaves a stale lock;
- the Tune experiment is named `<sweep>-<sweep id>`, the id kept in `sweep.json`: its place in a shared
  storage is unique to the folder (a copy of the folder resumes the same place), a place that already
  exists is refused for a new sweep, and one claimed by another sweep id is refused for a resume;
- a resume checks everything it will read: `sweep.json`, the sweep file copy, `results.parquet` and
  `trials.parquet` (readable, right key columns), the MLflow store, the Optuna study, Tune's state;
- `sweep.json` records the folder's absolute path: when a copied or moved folder resumes, the
  locations stored inside it (MLflow experiment and run artifact URIs) are rewritten to the new place;
  everything else in the folder is stored relative to it.
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
from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.common.stores import (
    check_database_url,
    check_own_database,
    check_store_file,
    sqlite_path,
    sqlite_url,
)
from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE

STATE_FILE = "sweep.json"
SWEEP_COPY = "sweep.yaml"
LOCK_FILE = ".ovit-ray.lock"
MLFLOW_DB = "mlflow.db"
ARTIFACTS = "mlartifacts"
RESULTS_KEYS = ("trial_id", "target")  # what a sweep's result rows are keyed by
STUDY_FILE = "optuna.db"
PLACE_FILE = ".ovit-sweep.json"  # in the Tune experiment's folder: which sweep id owns it
_STATE_KEYS = {"name", "sweep_id", "fingerprint"}


class FolderLock:
    """An exclusive `flock` on `<folder>/.ovit-ray.lock` (PID inside); a second holder is refused."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
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

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


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
        status = next((s for s in ("finished", "interrupted") if state.get(s)), "unfinished")
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
    for name, keys in ((RESULTS_FILE, RESULTS_KEYS), (TRIALS_FILE, ("trial_id", "status"))):
        _check_parquet(out / name, keys)
    check_own_database(sqlite_url(out / MLFLOW_DB), "mlflow", "--resume")  # ours and readable, before Ray
    check_own_database(sqlite_url(out / STUDY_FILE), "optuna", "--resume")


def _check_parquet(path: Path, keys: tuple[str, ...]) -> None:
    """A results file a resume will append to: readable, with its key columns."""
    if not path.exists():
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
        pq.ParquetFile(path).read(columns=[k for k in keys if k in names])
    except (OSError, ValueError, pa.ArrowException) as err:
        raise ValueError(
            f"{path}: unreadable ({' '.join(str(err).split())[:200]}); move it away to resume without its rows"
        ) from None
    missing = sorted(set(keys) - names)
    if missing:
        raise ValueError(f"{path}: not a sweep's file (no column(s) {missing}); move it away to resume")


def experiment_name(state: dict[str, Any], extensions: int = 0) -> str:
    """The Tune experiment of the sweep (`<name>-<id>`), then one per `--add-trials` extension."""
    base = f"{state['name']}-{state['sweep_id']}"
    return base if extensions == 0 else f"{base}-add{extensions}"


def check_study_storage(uri: str) -> None:
    """An Optuna storage URL that will work and harms nobody, checked before Ray starts: no credentials in
    it, a database kind whose driver is installed, a SQLite file in a folder this user can write that is
    new, empty or already an Optuna study (never another program's database)."""
    check_no_credentials(uri, "--optuna-storage")
    check_database_url(uri, "--optuna-storage", server="")
    path = sqlite_path(uri)
    if path is not None:
        check_store_file(path, "--optuna-storage")
        check_own_database(uri, "optuna", "--optuna-storage")


def check_stores(
    out: Path, state: dict[str, Any], storage: str | None, optuna_storage: str | None, resume: bool
) -> None:
    """The stores a sweep opens beyond its folder's own files, read-only, before Ray starts (issue 24.2,
    24.9): the Optuna study it names or recorded, and (`storage` None: a sweep run in this process, no
    Tune) each of its Tune experiments' places in `storage` (see `check_place`)."""
    recorded = state.get("optuna_storage")
    if optuna_storage and "optuna_storage" in state and optuna_storage != recorded:  # set when it started
        where = recorded or f"its own {STUDY_FILE}"
        raise ValueError(f"--optuna-storage: {out} keeps its study in {where}, got {optuna_storage}")
    if optuna_storage or recorded:
        check_study_storage(str(optuna_storage or recorded))
    if storage is not None:
        for extension in range(len(state.get("extensions", [])) + 1):
            check_place(storage, experiment_name(state, extension), state["sweep_id"], resume)


def _place(storage: str, experiment: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) of the experiment's place in `storage`; one line for a storage that
    cannot be opened."""
    import pyarrow as pa
    import pyarrow.fs

    try:
        filesystem, root = (
            pyarrow.fs.FileSystem.from_uri(storage)
            if "://" in storage
            else (pyarrow.fs.LocalFileSystem(), storage)
        )
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ValueError(f"storage: cannot open {storage!r} ({' '.join(str(err).split())[:200]})") from None
    return filesystem, f"{root.rstrip('/')}/{experiment}"


def check_place(storage: str, experiment: str, sweep_id: str, resume: bool) -> bool:
    """Whether the experiment's place in `storage` exists (then it is this sweep's: its `PLACE_FILE` names
    the sweep id), refusing one that holds anything else (someone's files, another sweep's state); on a
    resume, the Tune state there must be readable (Tune would fail on it only after Ray started)."""
    if "://" not in storage and not os.path.lexists(Path(storage, experiment)):
        return False  # a new local place: nothing to check, and no pyarrow import for a dry run
    import pyarrow as pa
    import pyarrow.fs

    filesystem, place = _place(storage, experiment)
    try:
        if filesystem.get_file_info(place).type == pyarrow.fs.FileType.NotFound:
            return False
        owner = _read_json(filesystem, f"{place}/{PLACE_FILE}").get("sweep_id")
        if owner != sweep_id:
            whose = f"sweep {owner}" if owner else "files that are not this sweep's"
            raise FileExistsError(f"storage: {place} already holds {whose}; choose another storage or --out")
        if resume:
            _check_tune_state(filesystem, place)
    except FileExistsError:
        raise
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"storage: cannot read {place} ({' '.join(str(err).split())[:200]})") from None
    return True


def _read_json(filesystem: Any, path: str) -> dict[str, Any]:
    """A small JSON object file in storage; empty when it is missing or is not one."""
    import pyarrow.fs

    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return {}
    with filesystem.open_input_stream(path) as stream:
        text = stream.read(1 << 16)
    try:
        found = json.loads(text.decode(errors="replace") or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _check_tune_state(filesystem: Any, place: str) -> None:
    """Tune's saved tuner and latest experiment state in `place`, as much as a resume reads of them."""
    import pyarrow.fs

    files = {
        info.base_name: info
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(place))
        if info.type == pyarrow.fs.FileType.File
    }
    tuner = files.get("tuner.pkl")
    if tuner is not None:
        with filesystem.open_input_stream(tuner.path) as stream:
            head = stream.read(16)
        if len(head) < 16 or head[:1] != b"\x80":  # a pickle starts with its PROTO opcode
            raise ValueError(f"{tuner.path}: Tune's saved tuner is damaged; this sweep cannot be resumed")
    states = sorted(name for name in files if name.startswith("experiment_state-") and name.endswith(".json"))
    if states:
        path = files[states[-1]].path
        with filesystem.open_input_stream(path) as stream:
            text = stream.read()
        try:
            json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: Tune's experiment state is damaged ({str(err)[:200]})") from None


def claim_place(storage: str, experiment: str, sweep_id: str, resume: bool) -> None:
    """Make the experiment's place in `storage` this sweep's, or refuse (`check_place`): a sweep never
    writes into a place that holds someone's files or another sweep of the same name. Its `PLACE_FILE` is
    written before Tune writes there, also by a resume whose Tune state was never written."""
    if check_place(storage, experiment, sweep_id, resume):
        return
    filesystem, place = _place(storage, experiment)
    filesystem.create_dir(place, recursive=True)
    with filesystem.open_output_stream(f"{place}/{PLACE_FILE}") as stream:
        stream.write(json.dumps({"sweep_id": sweep_id}).encode())


def relocate(out: Path, state: dict[str, Any]) -> dict[str, Any]:
    """After a copy or move: rewrite the old folder's path inside the local MLflow store so new
    artifacts land here, never in the old folder. Returns the state with the new folder recorded."""
    old, db = state.get("folder"), out / MLFLOW_DB
    if old is not None and old != str(out) and db.exists():
        old_uri, new_uri = (Path(old) / ARTIFACTS).as_uri(), (out / ARTIFACTS).as_uri()
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
                conn.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (new_uri, len(old_uri) + 1, len(old_uri), old_uri),
                )
    return {**state, "folder": str(out)}
