"""Input families of issue 24 for bench_fuzz.py: storage URLs, folder names, numbers (one module per
group of families; the sweep/space/cluster/flag families live in bench_fuzz.py).

Each generator prepares what its case needs under `work` (an outbox left in a folder, a user's database, a
victim file beside the output folder) and yields the argv of one real CLI run. Everything the run may change
lives in `work/out`; the harness counts a change anywhere else in `work` (the victim files, the user's
database, a store created beside the folder) as a broken promise.

- storage: `sync-mlflow DIR --mlflow-uri URL` on a DIR holding a hostile outbox (`..` and absolute artifact
  paths, symlinks leaving the folder, alone and inside a directory), URL one of: credentials in every form
  (userinfo, `;token=`, `?password=`, `&access_token=`, percent-encoded, fragment), a user's database, a
  file that is not SQLite, an Optuna store, a bogus scheme, or a fine store in an oddly named folder.
- folders: the same replay into `sqlite_url(DIR/mlflow.db)`, DIR a random name of `?`, `#`, `%20`, quotes,
  `;`, `@`, `:`, spaces, tabs, non-ASCII (the folder and its store must stay where the name says).
- numbers: counts of `prune`, `transfer` and `mlflow-server` beyond what the data, the model and the
  machine allow (the bound table, ovit_ray/orchestration/common/bounds.py), negative, zero, inf, NaN.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ovit_ray.orchestration.common.stores import sqlite_url
from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME, OUTBOX_TARGET

FAMILIES = ("storage", "folders", "numbers")
CHUNKS = [
    "sp ace",
    "%20",
    "?x=1",
    "#frag",
    "'",
    '"',
    ";token=z",
    "@h:1",
    "ü",
    "日本",
    "\t",
    "a..b",
    "~",
    "$HOME",
    "*",
]
CREDENTIALS = [
    "{s}://bob:SEKRIT@db.example/x",
    "{s}://h.example/;token=SEKRIT",
    "{s}://h.example/x;password=SEKRIT/y",
    "{s}://h.example/?a=1&password=SEKRIT",
    "{s}://h.example/?a=1;access_token=SEKRIT",
    "{s}://h.example/%3Btoken%3DSEKRIT",
    "{s}://h.example/#token=SEKRIT",
    "{s}://h.example/?X-Amz-Signature=SEKRIT",
]
SCHEMES = ["http", "https", "postgresql", "mysql", "s3"]
BOGUS = [
    "bogus://x",
    "sqlite:",
    "sqlite:////",
    "",
    "x" * 3000,
    "sqlite://",
    "file:///etc/passwd",
    "http://",
    "s3://bucket/x",
    "postgresql://db.example/x",
    "mysql://db.example/x",
    "sqlite+nodriver:///x.db",
]
NUMBERS: list[tuple[str, list[str], list[str]]] = [
    ("prune", ["-B"], ["0", "-1", "16385", "1000000", "10000000"]),
    ("prune", ["--num-grads"], ["0", "-1", "1000000", "10000000"]),
    ("prune", ["--grad-batch-size"], ["0", "-1", "100000", "1000000"]),
    ("prune", ["--sparsity"], ["1", "1.5", "0.9999999", "-0.1", "nan", "inf"]),
    ("prune", ["--damp"], ["0", "-1", "nan", "inf"]),
    ("prune", ["--seed"], ["-1", "10000000000000"]),
    ("prune", ["--device"], ["bogus", "cuda:99", "cpu:x", ""]),
    (
        "prune",
        ["--method", "optin", "--flops-ratio", "0.5", "--calib-size"],
        ["0", "-3", "100000", "1000000000"],
    ),
    ("transfer", ["--epochs"], ["0", "-1", "1000000000"]),
    ("transfer", ["--seeds"], ["-1", "10000000000000"]),
    ("transfer", ["--max-steps-per-epoch"], ["0", "-5"]),
    ("transfer", ["--lr"], ["0", "-1", "nan"]),
    ("mlflow-server", ["--port"], ["0", "-1", "70000", "1000000000"]),
]


def cases(kind: str, count: int, rng: random.Random, work: Path) -> Iterator[list[str]]:
    """`count` argv lists of one family; what a case needs is prepared just before it is yielded."""
    victims = _victims(work)
    template = _template_store(work)
    for i in range(count):
        if kind == "numbers":
            yield _numbers(rng, work)
            continue
        out = work / "out" / f"c{i}"
        if out.parent.exists():
            shutil.rmtree(out.parent)  # each case starts from an empty output folder
        folder = out / _name(rng) if kind == "folders" else out / "job"
        _hostile_outbox(folder, victims)
        if kind == "folders" or rng.random() < 0.3:
            store = folder / "mlflow.db" if kind == "folders" else out / "store" / _name(rng) / "mlflow.db"
            if rng.random() < 0.9:  # a fresh MLflow store takes seconds: most cases open a copy
                store.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, store)
            url = sqlite_url(store)
        else:
            url = _storage_url(rng, victims)
        yield ["sync-mlflow", str(folder), "--mlflow-uri", url]


def _name(rng: random.Random) -> str:
    return "".join(rng.sample(CHUNKS, rng.randint(1, 4)))


def _storage_url(rng: random.Random, victims: dict[str, Path]) -> str:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(CREDENTIALS).format(s=rng.choice(SCHEMES))
    if roll < 0.8:
        return sqlite_url(victims[rng.choice(["foreign", "notes", "optuna", "folder"])])
    return rng.choice(BOGUS)


def _victims(work: Path) -> dict[str, Path]:
    """Files outside every output folder that no run may change: a user's database and notes, an Optuna
    store, a folder; created once per family."""
    victim = work / "victim"
    paths = {
        "foreign": victim / "foreign.db",
        "notes": victim / "notes.txt",
        "optuna": victim / "optuna.db",
        "folder": victim / "dir.db",
    }
    if not victim.exists():
        victim.mkdir(parents=True)
        with sqlite3.connect(paths["foreign"]) as conn:
            conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("INSERT INTO customers (name) VALUES ('ada')")
        conn.close()
        paths["notes"].write_text("mine")
        paths["folder"].mkdir()
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.create_study(storage=sqlite_url(paths["optuna"]), study_name="theirs")
    return paths


def _template_store(work: Path) -> Path:
    """An empty MLflow store made once per family (by the real MLflow): cases open copies of it."""
    template = work / "template" / "mlflow.db"
    if not template.exists():
        from mlflow import MlflowClient

        template.parent.mkdir(parents=True)
        MlflowClient(sqlite_url(template)).search_experiments()
    return template


def _hostile_outbox(folder: Path, victims: dict[str, Path]) -> None:
    """An outbox as someone else could leave it: one fine call, and calls that try to leave the folder."""
    folder.mkdir(parents=True)
    (folder / "fine.txt").write_text("fine")
    (folder / "link.txt").symlink_to(victims["notes"])
    plots = folder / "plots"
    plots.mkdir()
    (plots / "leak.txt").symlink_to(victims["notes"])

    def artifact(path: str, artifact_path: str | None) -> dict[str, object]:
        return {"op": "log_artifact", "run_id": "offline-k", "path": path, "artifact_path": artifact_path}

    records = [
        {
            "op": "create_run",
            "run_id": "offline-k",
            "run_name": "r",
            "tags": {"ovit.run_key": "k"},
            "start_time": 1,
        },
        {"op": "log_batch", "run_id": "offline-k", "metrics": [["top1", 0.5, 1, 0]]},
        artifact("fine.txt", "kept"),
        artifact("fine.txt", "../../../../../../victim"),
        artifact("fine.txt", str(victims["notes"].parent)),
        artifact("link.txt", None),
        artifact("plots", "plots"),
        artifact(str(victims["notes"]), None),
        {"op": "end_run", "run_id": "offline-k", "status": "FINISHED", "end_time": 2},
    ]
    (folder / OUTBOX_TARGET).write_text(json.dumps({"uri": "http://h/...", "experiment": "e"}))
    (folder / OUTBOX_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))


def _numbers(rng: random.Random, work: Path) -> list[str]:
    command, flags, values = rng.choice(NUMBERS)
    out = str(work / "out")
    if command == "prune":
        method = [] if "--method" in flags else ["--method", "ovit"]
        return ["prune", *method, *flags, rng.choice(values), "--out", out, "--no-progress"]
    if command == "transfer":
        source = str(work / "missing.pt")
        return ["transfer", source, "--dataset", "digits-5-9", "--out", out, *flags, rng.choice(values)]
    return ["mlflow-server", "--dir", out, *flags, rng.choice(values)]
