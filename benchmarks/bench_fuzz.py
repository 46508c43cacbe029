"""Seeded fuzzing of user input: sweep files, search spaces, cluster files and CLI flags.

Every generated input goes through the real CLI (`main([...])`) on paths that start no Ray
(`sweep --dry-run`, `cluster validate`, flag parsing and validation of `prune`/`train`/`mlflow-server`
with a bad value). Each run must: exit 0 or 2, print no traceback, print exactly one line on stderr
when it fails (one mutation is one root cause), write nothing into the output folder on failure,
and keep the process's peak RSS below the limit.

    python benchmarks/bench_fuzz.py --per-kind 2000        # the benchmark (BENCHMARKS.md)
    tests/test_fuzz.py runs the same generator with a few hundred inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from ovit_ray.cli.main import main  # noqa: E402

KINDS = ("sweep", "space", "cluster", "flags")
WEIRD: list[Any] = [
    None,
    [],
    {},
    "x" * 5000,
    -1,
    0,
    10**30,
    1e308,
    float("inf"),
    float("nan"),
    True,
    "2:4",
    [[[]]],
    {"a": {"b": 1}},
    "../../etc/passwd",
    "ü%20?#",
    -(10**12),
    0.5,
]
TEXT_ATTACKS = [
    "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(
        f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    "a: &a [1, *a]\n",
    "{a: " * 2000 + "1" + "}" * 2000,
    "train: {window_epochs: " + "9" * 6000 + "}\n",
    "\x00\xff binary",
    "- just\n- a list\n",
    "",
    "name: x\nsearch: !!python/object/apply:os.system ['true']\n",
]


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def mutate(doc: Any, rng: random.Random) -> str:
    """One mutation of a parsed YAML document (a key deleted, renamed or given a weird value), or a
    text-level attack; returned as YAML text."""
    if rng.random() < 0.08:
        return rng.choice(TEXT_ATTACKS)
    doc = json.loads(json.dumps(doc))
    paths = list(_paths(doc))
    path = rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    action = rng.choice(("delete", "replace", "replace", "rename"))
    if action == "delete":
        del parent[path[-1]]
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{path[-1]}_typo"] = parent.pop(path[-1])
    else:
        parent[path[-1]] = rng.choice(WEIRD)
    return yaml.safe_dump(doc, allow_unicode=True)


def _sources() -> dict[str, list[Any]]:
    load = lambda paths: [yaml.safe_load(p.read_text()) for p in sorted(paths)]  # noqa: E731
    # Sweeps whose dry-run passes here (deit_small_imagenet needs a checkpoint and ImageNet under /data).
    sweeps = [
        d
        for d in load((ROOT / "sweeps").rglob("*.yaml"))
        if "search" in d and not {"checkpoint", "data_root"} & set(d.get("train", {}))
    ]
    return {
        "sweep": sweeps,
        "space": load((ROOT / "search_spaces").glob("*.yaml")),
        "cluster": load(ROOT.glob("cluster*.yaml")),
    }


FLAG_CASES: list[tuple[str, list[str]]] = [
    ("prune", ["--damp"]),
    ("prune", ["--sparsity"]),
    ("prune", ["-B"]),
    ("prune", ["--model"]),
    ("prune", ["--device"]),
    ("prune", ["--checkpoint"]),
    ("train", ["--end-epoch"]),
    ("train", ["--steps-per-target"]),
    ("train", ["--lr-max"]),
    ("train", ["--targets"]),
    ("train", ["--pattern"]),
    ("train", ["--workers"]),
    ("mlflow-server", ["--host"]),
    ("mlflow-server", ["--port"]),
    ("sweep", ["--mlflow-uri"]),
    ("report", []),
    ("sync-mlflow", ["--mlflow-uri"]),
]
FLAG_VALUES = [
    "inf",
    "nan",
    "-1",
    "0",
    "1e400",
    "10000000000",
    "bogus",
    "2:4",
    "5:4",
    "0:0",
    "",
    "0.0.0.0",
    "::0",
    "http://u:p@h/?access_token=t",
    "1.5",
    "-0",
    "ü",
    "%s%n",
    "x" * 3000,
]


def flag_argv(rng: random.Random, work: Path) -> list[str]:
    """A command with one flag given a random (mostly bad) value; it must fail before heavy work."""
    command, flag = rng.choice(FLAG_CASES)
    value = rng.choice(FLAG_VALUES)
    out = str(work / "out")
    if command == "prune":
        # A valid value would start pruning: pair it with a sparsity outside [0, 1) so the command
        # still stops at validation (the check under test is that nothing crashes before that).
        return ["prune", *flag, value, "--sparsity", "1.5", "--out", out]
    if command == "train":
        return ["train", *flag, value, "--end-epoch", "10000000000", "--out", out]
    if command == "mlflow-server":
        return ["mlflow-server", "--dir", out, *flag, value, "--host", "0"]
    if command == "sweep":
        return ["sweep", str(ROOT / "sweeps" / "quickstart.yaml"), "--dry-run", "--out", out, *flag, value]
    if command == "report":
        return ["report", str(work / value.replace("/", "_")[:50] or "x")]
    return ["sync-mlflow", str(work / "missing"), *flag, value]


def cases(kind: str, count: int, seed: int, work: Path) -> Iterator[list[str]]:
    """`count` argv lists for one kind; files are written under `work`."""
    rng = random.Random(f"{seed}-{kind}")
    sources = _sources()
    spaces = work / "search_spaces"
    spaces.mkdir(parents=True, exist_ok=True)
    for shipped in (ROOT / "search_spaces").glob("*.yaml"):  # the shipped sweeps name these
        (spaces / shipped.name).write_text(shipped.read_text())
    os.environ["OVIT_RAY_SEARCH_SPACES"] = str(spaces)
    for i in range(count):
        if kind == "flags":
            yield flag_argv(rng, work)
            continue
        text = mutate(rng.choice(sources["cluster" if kind == "cluster" else kind]), rng)
        if kind == "cluster":
            path = work / f"cluster{i}.yaml"
            path.write_text(text, errors="surrogateescape")
            yield ["cluster", "validate", str(path)]
            continue
        if kind == "space":
            (spaces / f"fz{i}.yaml").write_text(text, errors="surrogateescape")
            text = yaml.safe_dump(
                {
                    "name": "fz",
                    "train": {"targets": [0.5]},
                    "search": {"space": f"fz{i}", "algorithm": "random"},
                }
            )
        path = work / f"sweep{i}.yaml"
        path.write_text(text, errors="surrogateescape")
        yield ["sweep", str(path), "--dry-run", "--out", str(work / "out")]


def run_case(argv: list[str], work: Path) -> dict[str, Any]:
    """Run one argv in this process; what the contract checks need."""
    out, err = io.StringIO(), io.StringIO()
    began = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: a flag that does not parse
            rc = exc.code if isinstance(exc.code, int) else 2
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    written = (work / "out").exists() and any((work / "out").iterdir())
    return {
        "rc": rc,
        "stderr": lines,
        "seconds": time.perf_counter() - began,
        "written": written,
        "traceback": "Traceback" in out.getvalue() + err.getvalue(),
    }


def violations(argv: list[str], result: dict[str, Any]) -> list[str]:
    """Broken promises of one run (empty when it kept the contract)."""
    bad = []
    if result["rc"] not in (0, 2):
        bad.append(f"exit {result['rc']}")
    if result["traceback"]:
        bad.append("traceback")
    if result["rc"] == 2 and argv[0] != "cluster" and len(result["stderr"]) != 1:
        bad.append(f"{len(result['stderr'])} stderr lines")
    if result["rc"] == 2 and argv[0] == "cluster" and len(result["stderr"]) > 1:
        bad.append(f"{len(result['stderr'])} stderr lines")
    if result["rc"] != 0 and result["written"]:
        bad.append("wrote into the output folder")
    return bad


def fuzz(
    kinds: tuple[str, ...],
    per_kind: int,
    seed: int,
    work: Path,
    on_case: Callable[[str, list[str], dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every case; per kind: counts, exit codes, violations, timings and the peak RSS."""
    import logging

    logging.disable(logging.WARNING)  # MLflow/Ray warnings are not the CLI's error lines
    report: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        stats: dict[str, Any] = {"inputs": 0, "exit0": 0, "exit2": 0, "violations": [], "seconds": []}
        for argv in cases(kind, per_kind, seed, work / kind):
            result = run_case(argv, work / kind)
            stats["inputs"] += 1
            code = {0: "exit0", 2: "exit2"}.get(result["rc"], "other")
            stats[code] = stats.get(code, 0) + 1
            stats["seconds"].append(result["seconds"])
            stats["violations"] += [(argv, v) for v in violations(argv, result)]
            if on_case:
                on_case(kind, argv, result)
        stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report[kind] = stats
    return report


def main_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="ovit-fuzz-"))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    report = fuzz(tuple(args.kinds), args.per_kind, args.seed, work)
    print(f"imports: peak RSS {base_rss:.0f} MB; total {time.perf_counter() - began:.0f} s")
    print("| kind | inputs | exit 0 | exit 2 | violations | median ms | max ms | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    failed = 0
    for kind, s in report.items():
        seconds = sorted(s["seconds"])
        print(
            f"| {kind} | {s['inputs']} | {s['exit0']} | {s['exit2']} | {len(s['violations'])} | "
            f"{seconds[len(seconds) // 2] * 1000:.1f} | {seconds[-1] * 1000:.0f} | {s['peak_rss_mb']:.0f} |"
        )
        failed += len(s["violations"])
        for argv, problem in s["violations"][:5]:
            print(f"  {problem}: {' '.join(argv)[:200]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_bench())
