"""Input families of issue 24 for bench_fuzz.py: storage URLs, folder names, numbers, model cards, depth
blocks (one module per group of families; the sweep/space/cluster/flag families live in bench_fuzz.py).

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
- cards: `evaluate FILE` on a copy of one real exported model (`prune` then `export`, made once per family)
  whose card beside it (`FILE.json`) is doctored: not an object (a list, a string, empty, not JSON, over
  the size bound), `pretrained` and other loading kwargs, a missing, unknown or non-string `timm_model`,
  `timm_kwargs` out of bounds (embed_dim 1e7 and 10**7, depth 10**6, num_classes -1 / 0 / a bool / another
  head, img_size 0, an unknown kwarg), `prunable_params` that are not tensors of the file, `structure` /
  `depth_structure` garbage, `preprocessing` mean/std of a wrong length or NaN, an unknown dataset, any
  field given a weird value; or the weights file truncated, emptied, replaced by text, given a header
  length of 2^60 or a header that is not JSON (then `prune --checkpoint FILE` too, some of the time).
- depth: `sweep FILE --dry-run` on the CI depth sweep (sweeps/ci/boundarydpt_frontier_digits.yaml) whose
  `depth:` attention or activation count is negative, zero, beyond the model's 4 blocks, 10**40, a float,
  a string, a list, null, a bool, NaN; or sampled under `search.params` (randint, grid, choice, uniform,
  qrandint over such values) with the random, grid or Optuna algorithm.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.stores import sqlite_url
from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME, OUTBOX_TARGET

FAMILIES = ("storage", "folders", "numbers", "cards", "depth")
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
    if kind == "cards":
        yield from _cards(count, rng, work)
        return
    if kind == "depth":
        yield from _depth(count, rng, work)
        return
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


WEIRD_VALUES: list[Any] = [
    None,
    [],
    {},
    "x" * 3000,
    -1,
    0,
    10**30,
    1e308,
    True,
    "../../etc/passwd",
    [[[]]],
    0.5,
]
# One doctored card each (`card` is the exported card, a dict; the result is what the file holds).
CARD_MUTATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "a list": lambda c: [c],
    "a string": lambda c: "card",
    "a number": lambda c: 3,
    "null": lambda c: None,
    "pretrained": lambda c: _kwargs(c, pretrained=True),
    "checkpoint_path": lambda c: _kwargs(c, checkpoint_path="/etc/passwd"),
    "features_only": lambda c: _kwargs(c, features_only=True),
    "no timm_model": lambda c: {k: v for k, v in c.items() if k != "timm_model"},
    "unknown timm_model": lambda c: c | {"timm_model": "vit_made_up_patch16"},
    "timm_model a number": lambda c: c | {"timm_model": 7},
    "timm_model another model": lambda c: c | {"timm_model": "resnet18"},
    "no timm_kwargs": lambda c: {k: v for k, v in c.items() if k != "timm_kwargs"},
    "timm_kwargs a list": lambda c: c | {"timm_kwargs": [1, 2]},
    "embed_dim 1e7": lambda c: _kwargs(c, embed_dim=1e7),
    "embed_dim 10**7": lambda c: _kwargs(c, embed_dim=10**7),
    "embed_dim 65536": lambda c: _kwargs(c, embed_dim=65536, num_heads=1),
    "embed_dim a string": lambda c: _kwargs(c, embed_dim="64"),
    "depth 10**6": lambda c: _kwargs(c, depth=10**6),
    "depth 1000": lambda c: _kwargs(c, depth=1000),
    "depth 0": lambda c: _kwargs(c, depth=0),
    "depth -1": lambda c: _kwargs(c, depth=-1),
    "num_classes -1": lambda c: _kwargs(c, num_classes=-1),
    "num_classes 0": lambda c: _kwargs(c, num_classes=0),
    "num_classes true": lambda c: _kwargs(c, num_classes=True),
    "num_classes 11": lambda c: _kwargs(c, num_classes=11),
    "num_classes 1e9": lambda c: _kwargs(c, num_classes=10**9),
    "no num_classes": lambda c: (
        c | {"timm_kwargs": {k: v for k, v in c["timm_kwargs"].items() if k != "num_classes"}}
    ),
    "img_size 0": lambda c: _kwargs(c, img_size=0),
    "img_size 65536": lambda c: _kwargs(c, img_size=65536),
    "patch_size 0": lambda c: _kwargs(c, patch_size=0),
    "num_heads 0": lambda c: _kwargs(c, num_heads=0),
    "num_heads 3": lambda c: _kwargs(c, num_heads=3),
    "mlp_ratio 1e9": lambda c: _kwargs(c, mlp_ratio=1e9),
    "mlp_ratio -4": lambda c: _kwargs(c, mlp_ratio=-4.0),
    "unknown kwarg": lambda c: _kwargs(c, bogus_kwarg=1),
    "global_pool bogus": lambda c: _kwargs(c, global_pool="bogus"),
    "prunable_params missing tensors": lambda c: c | {"prunable_params": ["blocks.9.attn.qkv.weight"]},
    "prunable_params a string": lambda c: c | {"prunable_params": "blocks.0.attn.qkv.weight"},
    "prunable_params a bias": lambda c: c | {"prunable_params": ["head.bias", "pos_embed"]},
    "structure a string": lambda c: c | {"structure": "garbage"},
    "structure uneven": lambda c: c | {"structure": {"heads": [1, 1], "neurons": [3]}},
    "structure too few blocks": lambda c: c | {"structure": {"heads": [1], "neurons": [3]}},
    "structure negative": lambda c: c | {"structure": {"heads": [-1] * 4, "neurons": [8] * 4}},
    "structure huge": lambda c: c | {"structure": {"heads": [2] * 4, "neurons": [10**9] * 4}},
    "structure zero": lambda c: c | {"structure": {"heads": [0] * 4, "neurons": [0] * 4}},
    "structure 2000 blocks": lambda c: c | {"structure": {"heads": [1] * 2000, "neurons": [1] * 2000}},
    "structure merge_r": lambda c: (
        c | {"structure": {"heads": [2] * 4, "neurons": [256] * 4, "merge_r": [99] * 4}}
    ),
    "depth_structure a list": lambda c: c | {"depth_structure": [1, 2]},
    "depth_structure bogus states": lambda c: (
        c
        | {
            "depth_structure": {
                "heads": [2] * 4,
                "neurons": [256] * 4,
                "attention": ["x"] * 4,
                "mlp": ["y"] * 4,
            }
        }
    ),
    "depth_structure short": lambda c: (
        c | {"depth_structure": {"heads": [2] * 4, "neurons": [256] * 4, "attention": ["keep"], "mlp": []}}
    ),
    "depth_structure dropped": lambda c: (
        c
        | {
            "depth_structure": {
                "heads": [2] * 4,
                "neurons": [256] * 4,
                "attention": ["dropped"] * 4,
                "mlp": ["merged"] * 4,
            }
        }
    ),
    "preprocessing mean short": lambda c: _pre(c, mean=[0.5]),
    "preprocessing std nan": lambda c: _pre(c, std=[float("nan")] * 3),
    "preprocessing std zero": lambda c: _pre(c, std=[0.0] * 3),
    "preprocessing a string": lambda c: c | {"preprocessing": "none"},
    "dataset unknown": lambda c: c | {"dataset": "imagenet-22k"},
    "dataset imagefolder": lambda c: c | {"dataset": "imagefolder", "data_root": "/nonexistent"},
    "split_seed -1": lambda c: c | {"split_seed": -1},
    "split_seed 10**30": lambda c: c | {"split_seed": 10**30},
    "top1 2": lambda c: c | {"top1": 2.0},
    "top1 nan": lambda c: c | {"top1": float("nan")},
    "model unknown": lambda c: c | {"model": "no-such-preset"},
}
# Card files that are not a card's JSON: empty, not JSON, not UTF-8, nested past the parser's recursion limit,
# a number past Python's digit limit, over the size bound.
CARD_TEXTS = [
    "",
    "{'timm_model': ",
    "\x00\xff",
    "[" * 100_000,
    '{"split_seed": ' + "9" * 5000 + "}",
    " " * (11 << 20),
]
PRUNE = ["--method", "magnitude", "--sparsity", "0.5", "--no-progress"]  # the cheapest real pruning
# What happens to the weights file (the card stays as exported); `prune --checkpoint` reads these too.
WEIGHT_DAMAGE = ("truncated", "empty", "text", "huge header", "header not JSON")


def _kwargs(card: dict[str, Any], **change: Any) -> dict[str, Any]:
    return card | {"timm_kwargs": card["timm_kwargs"] | change}


def _pre(card: dict[str, Any], **change: Any) -> dict[str, Any]:
    return card | {"preprocessing": card.get("preprocessing", {}) | change}


def _exported(work: Path) -> Path:
    """One real exported model (`prune` a preset by magnitude, `export` the folder), made once per family;
    its console output is not a case's."""
    model = work / "model" / "m.safetensors"
    if not model.exists():
        from ovit_ray.cli.main import main

        pruned = work / "model" / "pruned"
        prune = ["prune", *PRUNE, "--out", str(pruned)]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            if main(prune) or main(["export", str(pruned), "--out", str(model)]):
                raise RuntimeError(f"cannot make the exported model of the cards family: {err.getvalue()}")
    return model


def _damage(path: Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: rng.randint(1, len(data) - 1)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "text":
        path.write_text("these are not weights\n")
    elif how == "huge header":
        path.write_bytes((1 << 60).to_bytes(8, "little") + data[8:])
    else:
        size = int.from_bytes(data[:8], "little")
        path.write_bytes(data[:8] + b"[" * size + data[8 + size :])


def _cards(count: int, rng: random.Random, work: Path) -> Iterator[list[str]]:
    from ovit_ray.orchestration.tracking.card import card_path

    model = _exported(work)
    exported = json.loads(card_path(model).read_text())
    for i in range(count):
        out = work / "out" / f"c{i}"
        if out.parent.exists():
            shutil.rmtree(out.parent)
        out.mkdir(parents=True)
        target = out / model.name
        shutil.copyfile(model, target)
        roll = rng.random()
        card: Any = exported
        if roll < 0.12:
            _damage(target, rng.choice(WEIGHT_DAMAGE), rng)
            if rng.random() < 0.5:  # the same file as a starting checkpoint
                card_path(target).write_text(json.dumps(card))
                yield ["prune", "--checkpoint", str(target), *PRUNE, "--out", str(out / "pruned")]
                continue
        elif roll < 0.2:
            text = rng.choice(CARD_TEXTS)
            card_path(target).write_text(text, errors="surrogateescape")
            yield ["evaluate", str(target)]
            continue
        elif roll < 0.35:
            card = _weird(exported, rng)
        else:
            card = CARD_MUTATIONS[rng.choice(sorted(CARD_MUTATIONS))](json.loads(json.dumps(exported)))
        card_path(target).write_text(json.dumps(card))
        yield ["evaluate", str(target)]


def _weird(card: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The card with one field (at any depth) given a weird value."""
    card = json.loads(json.dumps(card))
    parent: Any = card
    while True:
        key = rng.choice(list(parent) if isinstance(parent, dict) else range(len(parent)))
        child = parent[key]
        if not (isinstance(child, dict | list) and child and rng.random() < 0.5):
            break
        parent = child
    parent[key] = rng.choice(WEIRD_VALUES)
    return card


DEPTH_SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "ci" / "boundarydpt_frontier_digits.yaml"
DEPTH_VALUES: list[Any] = [
    -1, -(10**12), 0, 1, 2, 4, 5, 100, 10**40, 1.5, 2.0, -0.5, "2", "x", [1, 2], None, True, False, {},
    float("nan"), float("inf"), "1e3",
]  # fmt: skip
DEPTH_SAMPLERS: list[Callable[[random.Random], Any]] = [
    lambda r: {"randint": [r.choice([-5, 0, 1, 3]), r.choice([2, 5, 100, 10**40])]},
    lambda r: {"randint": [1, 100]},
    lambda r: {"qrandint": [r.choice([-2, 0, 1]), r.choice([4, 9]), r.choice([0, 1, 3])]},
    lambda r: {"grid": r.sample(DEPTH_VALUES, r.randint(1, 3))},
    lambda r: {"choice": r.sample(DEPTH_VALUES, r.randint(1, 3))},
    lambda r: {"choice": []},
    lambda r: {"uniform": [r.choice([-1.0, 0.0, 0.5]), r.choice([3.0, 1e40])]},
    lambda r: {"randint": [5, 1]},
    lambda r: {"randint": "1..4"},
    lambda r: {"loguniform": [0, 4]},
    lambda r: {"bogus": [1, 2]},
]


def _depth(count: int, rng: random.Random, work: Path) -> Iterator[list[str]]:
    import yaml

    base = yaml.safe_load(DEPTH_SWEEP.read_text())
    for i in range(count):
        doc = json.loads(json.dumps(base))
        field = rng.choice(["attention", "activation"])
        other = "activation" if field == "attention" else "attention"
        doc["depth"][other] = rng.randint(0, 4)  # valid: the mutated field stays the one problem
        if rng.random() < 0.5:
            doc["depth"][field] = rng.choice(DEPTH_VALUES)
        else:
            del doc["depth"][field]
            sampler = rng.choice(DEPTH_SAMPLERS)(rng)
            # an algorithm that takes the sampler (grid: grid and random; the rest: random and Optuna), so
            # the value stays the one problem
            algorithm = rng.choice(["random", "grid"] if "grid" in sampler else ["random", "optuna"])
            doc["search"] = {"algorithm": algorithm, "params": {field: sampler}}
            if algorithm != "grid":
                doc["search"]["num_samples"] = rng.randint(1, 4)
        path = work / f"depth{i}.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        yield ["sweep", str(path), "--dry-run", "--out", str(work / "out")]
