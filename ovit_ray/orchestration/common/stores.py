"""Local SQLite stores: one way to name a file as a SQLAlchemy URL, and one check that a database is
ours before MLflow or Optuna (both open stores through SQLAlchemy) touches it.

Why the URL helper (issue 24.8): `sqlite:///` + path was cut at `?`, had its `%20` decoded and, for
other URL parsers, lost everything after `#`: the study of `--out 'w/sp ace%20 q?x'` went to
`w/sp ace  q`, beside the folder. Why the check (issue 24.3): both libraries create or migrate their
tables in whatever database a URL names; a user's database gained an Optuna study, another was migrated
by MLflow (and then failed).

Which databases are ours, for a store of kind K (MLflow: main table `experiments`; Optuna: `studies`):
- a missing file, an empty file, or one without tables: the library creates its tables;
- one with an `alembic_version` table: its revision is one of K's own migrations (the scripts shipped
  with the installed library) and K's main table is there. Further tables are tolerated: only K writes
  an `alembic_version` with K's revisions, and a store's own migrations never touch tables they lack;
- one without `alembic_version` (or with an empty one): only tables K creates before its first
  migration (K's store being created right now by another process), main table included.
Anything else (another program's database, the other kind's store, a file that is not SQLite) is
refused, read-only, before either library opens it. Databases behind a server URL are not inspected,
but their URL must name a database kind whose driver is installed (`check_database_url`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sqlite3
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

StoreKind = Literal["mlflow", "optuna"]
# Per kind: what users call it, its main table, the package holding its alembic scripts.
_LABEL = {"mlflow": "an MLflow store", "optuna": "an Optuna study store"}
_MAIN_TABLE = {"mlflow": "experiments", "optuna": "studies"}
_MIGRATIONS = {"mlflow": "mlflow.store.db_migrations", "optuna": "optuna.storages._rdb"}
SQLITE_HEADER = b"SQLite format 3\x00"


def sqlite_url(path: str | Path) -> str:
    """`sqlite:///<absolute path>` that SQLAlchemy reads back as exactly `path`.

    Plain when the path holds only letters, digits and `/._-~` (readable in `--dry-run` lines);
    otherwise the whole path percent-encoded, `/` included: SQLAlchemy decodes the database part of
    the URL, and MLflow, which creates the parent folder of the URL's raw text, then finds no folder
    in it to create (with `/` kept, it made `w/sp%20ace/` beside `w/sp ace/`); `make_store_folder`
    creates the real one.
    """
    full = str(Path(path).resolve())
    return f"sqlite:///{full}" if quote(full, safe="/") == full else f"sqlite:///{quote(full, safe='')}"


def default_tracking_uri(out_dir: str | Path) -> str:
    """Embedded SQLite store inside the output dir (MLflow 3 rejects the old ./mlruns store)."""
    return sqlite_url(Path(out_dir) / "mlflow.db")


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite` URL opens, as SQLAlchemy reads it (also `?uri=true` SQLite URI filenames);
    None for another backend and in-memory databases; ``ValueError`` for a `sqlite` URL SQLAlchemy cannot
    parse (`sqlite:`), which MLflow would retry for 100 s before failing."""
    if not url.lower().startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a valid SQLite URL: {url[:200]!r} (sqlite:///PATH)") from None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if str(parsed.query.get("uri", "")).lower() not in ("true", "1") or not database.startswith("file:"):
        return Path(database)
    name, _, options = database.removeprefix("file:").partition("?")
    if "mode=memory" in options or name in ("", ":memory:"):
        return None
    name = name.split("#", 1)[0]
    if name.startswith("//"):  # file://host/path: only an empty host or localhost names a local file
        name = "/" + name[2:].partition("/")[2]
    return Path(unquote(name))


def check_database_url(
    url: str, what: str, *, server: str = " (or http(s)://HOST:PORT for an MLflow server)"
) -> None:
    """A database URL SQLAlchemy can open on this machine: it parses, its kind is known and its driver is
    installed (`postgresql://` without psycopg, `s3://`, `bogus://` ended in exit 70, or 100 s of retries).
    `server`: what else the flag takes, for the error line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    scheme = url.partition(":")[0]
    try:
        make_url(url).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError):
        raise ValueError(
            f"{what}: {scheme!r} names no database SQLAlchemy knows; give sqlite:///PATH, "
            f"postgresql://HOST/DB, mysql://HOST/DB{server}"
        ) from None
    except ImportError as err:
        raise ValueError(
            f"{what}: {scheme} URLs need the Python driver {err.name!r}, which is not installed here"
        ) from None


def make_store_folder(url: str, what: str) -> None:
    """Create the folder of a local SQLite store, as MLflow does for a plain URL (not for an encoded one,
    whose raw text names no folder); refuse one this process cannot write (SQLite then fails only after
    MLflow's 100 s of retries)."""
    path = sqlite_path(url)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{what}: cannot create the folder {path.parent} ({err.strerror})") from None
    check_store_file(path, what)


def check_store_file(path: Path, what: str) -> None:
    """Refuse a SQLite file this process cannot create or write: its folder missing, or not writable
    (SQLite then fails only after MLflow's 100 s of retries, or once Optuna opens it, after Ray started).
    The folder is tested by creating an unnamed temporary file in it, which nobody sees: `os.access` says
    yes to root on a read-only mount or in /proc."""
    import tempfile

    if not path.parent.is_dir():
        raise ValueError(f"{what}: {path.parent} is not a folder (create it, or name a file in one)")
    try:
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise ValueError(
            f"{what}: {path.parent} is not a folder this user can write ({err.strerror}); name another file"
        ) from None
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise ValueError(f"{what}: {path} cannot be written by this user; name another file")


def check_own_database(url: str, kind: StoreKind, what: str) -> None:
    """Refuse (``ValueError`` naming `what` and the file) a local SQLite database that is not ours for
    a store of `kind`, by the rules in the module docstring. Read-only: it creates nothing, not even
    a missing file or a journal. Call it before MLflow or Optuna opens `url`."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    label = _LABEL[kind]
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a directory, not a database file")
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if not header:
        return
    if header != SQLITE_HEADER:
        raise ValueError(f"{what}: {path} is not a SQLite database (so not {label}); name another file")
    tables, revisions = _tables(path, what)
    main = _MAIN_TABLE[kind]
    if not tables:
        return
    if revisions:
        if revisions <= _revisions(kind) and main in tables:
            return
        why = f"its alembic_version {', '.join(sorted(revisions))[:80]!r} is not one of {kind}'s migrations"
    else:
        foreign = sorted(tables - _initial_tables(kind) - {"alembic_version"})
        if not foreign and main in tables:
            return
        why = "it has tables " + ", ".join(foreign or sorted(tables))[:300]
    raise ValueError(
        f"{what}: {path} is not {label} ({why}); ovit-ray opens only a new or empty file or {label}, "
        "never changes another database: name another file"
    )


def _tables(path: Path, what: str) -> tuple[set[str], set[str]]:
    """User tables of the database and the revisions in its `alembic_version` (empty without one), read-only."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
            ).fetchall()
            tables = {str(r[0]) for r in rows}
            if "alembic_version" not in tables:
                return tables, set()
            revisions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error as err:
        raise ValueError(f"{what}: {path} is not a readable SQLite database ({err})") from None
    return tables, {str(r[0]) for r in revisions}


@functools.cache
def _revisions(kind: StoreKind) -> frozenset[str]:
    """The alembic revisions of `kind`'s migration scripts as installed (read from the files, not imported)."""
    package = importlib.import_module(_MIGRATIONS[kind])
    folder = Path(package.__file__ or "").parent
    scripts = (folder / "versions").glob("*.py") if kind == "mlflow" else folder.glob("alembic/versions/*.py")
    found = (re.search(r"^revision\s*=\s*[\"']([^\"']+)[\"']", s.read_text(), re.M) for s in scripts)
    return frozenset(m.group(1) for m in found if m)


@functools.cache
def _initial_tables(kind: StoreKind) -> frozenset[str]:
    """The tables `kind` creates before stamping its first alembic revision."""
    if kind == "mlflow":
        from mlflow.store.tracking.dbmodels.initial_models import Base

        return frozenset(Base.metadata.tables)
    from optuna.storages._rdb import models

    return frozenset(models.BaseModel.metadata.tables)
