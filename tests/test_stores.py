"""SQLite stores named by path (issue 24.8) and databases that are not ours (issue 24.3), with the real
MLflow and Optuna opening them (no Ray)."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from ovit_ray.orchestration.common.stores import check_own_database, sqlite_path, sqlite_url
from ovit_ray.orchestration.tracking.client import Tracker

# Folder names that broke a `sqlite:///` + path URL: `?` cut it, `%20` was decoded, `#` is a fragment
# to URL parsers; quotes, `;`, `@` and `:` and non-ASCII for good measure.
HOSTILE_NAMES = [
    "sp ace%20 q?x",
    "a#b",
    "it's",
    "ü ñ 日本",
    "p%2Fq",
    "semi;token=z",
    "@at:colon",
    "q?uri=true",
]


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_sqlite_url_opens_exactly_that_file_in_mlflow_and_optuna(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna
    from mlflow import MlflowClient

    logging.getLogger("optuna").setLevel(logging.WARNING)
    monkeypatch.chdir(tmp_path)  # a relative or cut path would land here
    for kind in ("mlflow", "optuna"):
        folder = tmp_path / kind / name
        folder.mkdir(parents=True)
        target = folder / f"{kind}.db"
        url = sqlite_url(target)
        assert sqlite_path(url) == target.resolve()
        before = _tree(tmp_path)
        if kind == "mlflow":
            MlflowClient(url).create_experiment("e", "mlflow-artifacts:/e")
        else:
            optuna.create_study(storage=url, study_name="s")
        assert target.is_file() and _tree(tmp_path) - before == {target}, (url, _tree(tmp_path) - before)
        with sqlite3.connect(target) as conn:  # the tables went into the intended file
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert ("experiments" if kind == "mlflow" else "studies") in tables


def test_plain_paths_keep_the_plain_url_and_tracker_uses_the_helper(tmp_path: Path) -> None:
    assert sqlite_url(tmp_path / "a" / "m.db") == f"sqlite:///{tmp_path.resolve() / 'a' / 'm.db'}"
    odd = tmp_path / "w" / "sp ace%20 q?x"
    tracker = Tracker(odd, "e")
    assert tracker.uri == sqlite_url(odd / "mlflow.db") and sqlite_path(tracker.uri) == odd / "mlflow.db"
    assert sqlite_path("sqlite:///rel.db") == Path("rel.db") and sqlite_path("postgresql://h/db") is None
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None


def _user_database(path: Path) -> bytes:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, total REAL)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    conn.close()
    return path.read_bytes()


def test_foreign_databases_are_refused_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    content = _user_database(foreign)
    with pytest.raises(ValueError, match=r"not an MLflow store .*customers, orders") as err:
        Tracker(tmp_path / "out", "e", sqlite_url(foreign))
    assert str(foreign) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"--optuna-storage: .* not an Optuna study store"):
        check_own_database(sqlite_url(foreign), "optuna", "--optuna-storage")
    assert foreign.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db", "out"]  # no journal, no copy

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="not a SQLite database"):
        check_own_database(sqlite_url(garbage), "mlflow", "--mlflow-uri")
    directory = tmp_path / "dir.db"
    directory.mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        check_own_database(sqlite_url(directory), "optuna", "--optuna-storage")


def test_own_stores_empty_and_missing_files_are_accepted_without_creating_anything(tmp_path: Path) -> None:
    import optuna

    missing = tmp_path / "new" / "m.db"
    for kind in ("mlflow", "optuna"):
        check_own_database(sqlite_url(missing), kind, "x")  # type: ignore[arg-type]
    assert not missing.parent.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    check_own_database(sqlite_url(empty), "mlflow", "x")
    check_own_database("postgresql://db.example/x", "optuna", "x")  # not a local file: not inspected

    tracker = Tracker(tmp_path / "out", "e")
    tracker.start_run("r")
    mlflow_db = sqlite_url(tmp_path / "out" / "mlflow.db")
    check_own_database(mlflow_db, "mlflow", "x")
    Tracker(tmp_path / "out", "e")  # our own store opens again
    study_db = sqlite_url(tmp_path / "optuna.db")
    optuna.create_study(storage=study_db, study_name="s")
    check_own_database(study_db, "optuna", "x")
    # Each kind is foreign to the other: a typo must not put a study into the MLflow store.
    with pytest.raises(ValueError, match="not an Optuna study store"):
        check_own_database(mlflow_db, "optuna", "--optuna-storage")
    with pytest.raises(ValueError, match="not an MLflow store"):
        check_own_database(study_db, "mlflow", "--mlflow-uri")


def test_look_alikes_are_refused_and_an_own_store_with_an_extra_table_opens(tmp_path: Path) -> None:
    """A user's tables named like MLflow's are not a store; another tool's alembic revision is not MLflow's."""
    alike = tmp_path / "alike.db"
    with sqlite3.connect(alike) as conn:
        conn.execute("CREATE TABLE experiments (id INTEGER)")
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    with pytest.raises(ValueError, match="it has tables customers"):
        check_own_database(sqlite_url(alike), "mlflow", "--mlflow-uri")
    stamped = tmp_path / "stamped.db"
    with sqlite3.connect(stamped) as conn:
        conn.execute("CREATE TABLE experiments (id INTEGER)")
        conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
        conn.execute("INSERT INTO alembic_version VALUES ('0123456789ab')")
    conn.close()
    with pytest.raises(ValueError, match="'0123456789ab' is not one of mlflow's migrations"):
        check_own_database(sqlite_url(stamped), "mlflow", "--mlflow-uri")
    Tracker(tmp_path / "own", "e").start_run("r")
    with sqlite3.connect(tmp_path / "own" / "mlflow.db") as conn:
        conn.execute("CREATE TABLE my_notes (t TEXT)")  # the user's own notes in our store
    conn.close()
    check_own_database(sqlite_url(tmp_path / "own" / "mlflow.db"), "mlflow", "--mlflow-uri")
    assert os.access(alike, os.R_OK)


def test_a_store_in_a_new_folder_opens_and_a_broken_sqlite_url_is_one_line(tmp_path: Path) -> None:
    """MLflow makes the folder of a plain URL only; an encoded one (odd names) needs it made first. A
    `sqlite:` URL SQLAlchemy cannot parse made MLflow retry for 100 s, then exit 70."""
    deep = tmp_path / "new ?x" / "deeper" / "m.db"
    Tracker(tmp_path / "out", "e", sqlite_url(deep)).start_run("r")
    assert deep.is_file()
    for broken in ("sqlite:", "sqlite:/x.db", "sqlite+nodriver:"):
        with pytest.raises(ValueError, match="not a valid SQLite URL"):
            Tracker(tmp_path / "out", "e", broken)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("bogus://x", "'bogus' names no database"),
        ("s3://bucket/x", "'s3' names no database"),
        ("file:///tmp/mlruns", "'file' names no database"),
        ("postgresql://db.example/x", "need the Python driver"),
        ("mysql://db.example/x", "need the Python driver"),
        ("http://", "names no server"),
    ],
)
def test_tracking_uris_that_name_no_usable_database_are_one_line(
    url: str, expected: str, tmp_path: Path
) -> None:
    """They ended in exit 70 inside MLflow (no dialect, no driver) before anything told the user."""
    if "driver" in expected and any(_installed(m) for m in ("psycopg", "psycopg2", "MySQLdb")):
        pytest.skip("a database driver is installed here")
    with pytest.raises(ValueError, match=expected):
        Tracker(tmp_path / "out", "e", url)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
