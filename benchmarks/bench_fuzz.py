"""Seeded fuzzing of user input: sweep files, search spaces, cluster files and CLI flags, and (issue 24,
`fuzz_inputs.py`) storage URLs, folder names, counts, model cards and depth blocks.

Every generated input goes through the real CLI (`main([...])`) on paths that start no Ray
(`sweep --dry-run`, `cluster validate`, flag parsing and validation of `prune`/`train`/`mlflow-server`
with a bad value, `sync-mlflow` replaying a hostile outbox into a local store, `prune` and `transfer`
counts beyond the bound table, `evaluate` of an exported model beside a doctored card or a damaged weights
file, a depth sweep's attention/activation counts). Each run must: exit 0 or 2, print no traceback, print exactly one line
on stderr when it fails (one mutation is one root cause), leave the output folder as it was on failure,
change nothing outside the output folder (the scratch folder is watched, and the runs' working
directory is inside it), and allocate less than 1 GB above what the process held when it started.

    python benchmarks/bench_fuzz.py --per-kind 2000 --per-heavy-kind 100   # the benchmark (BENCHMARKS.md)
    tests/test_fuzz.py runs the same generators with a few hundred inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import results_file as results
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import fuzz_inputs  # noqa: E402

from ovit_ray.cli.main import main  # noqa: E402

# The issue-24 families load a model or open an MLflow store per case (seconds; the depth family reads a
# model's architecture): fewer of them by default.
HEAVY_KINDS = fuzz_inputs.FAMILIES
KINDS = ("sweep", "space", "cluster", "flags", *HEAVY_KINDS)
OVER_GB = 1e9
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
    "gradual: {window_epochs: " + "9" * 6000 + "}\n",
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
        if "search" in d and not {"checkpoint", "data_root"} & set(d)
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


# The second mistake of every `prune` flag case (see `flag_argv`).
COMPANION = ["--sparsity", "1.5"]


def flag_argv(rng: random.Random, work: Path) -> list[str]:
    """A command with one flag given a random (mostly bad) value; it must fail before heavy work."""
    command, flag = rng.choice(FLAG_CASES)
    value = rng.choice(FLAG_VALUES)
    out = str(work / "out")
    if command == "prune":
        # A valid value would start pruning: pair it with a sparsity outside [0, 1) so the command
        # still stops at validation (the check under test is that nothing crashes before that).
        return ["prune", *flag, value, *COMPANION, "--out", out]
    if command == "train":
        # The same for a run: a warmup longer than the run is refused once every value is valid, so a bad
        # value of the flag stays the one problem (one line) and a valid one still stops at validation.
        return ["train", *flag, value, "--warmup-epochs", "100000", "--out", out]
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
    if kind in HEAVY_KINDS:
        yield from fuzz_inputs.cases(kind, count, rng, work)
        return
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
                    "gradual": {"targets": [0.5]},
                    "search": {"space": f"fz{i}", "algorithm": "random"},
                }
            )
        path = work / f"sweep{i}.yaml"
        path.write_text(text, errors="surrogateescape")
        yield ["sweep", str(path), "--dry-run", "--out", str(work / "out")]


def _tree(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file and link under `root` (but `skip`): what a run may not change."""
    seen: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        if skip is not None and Path(folder) == skip.parent:
            dirs[:] = [d for d in dirs if Path(folder) / d != skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                seen[path] = (info.st_size, info.st_mtime_ns)
    return seen


class _PeakRss:
    """The most memory the process held while the block ran, sampled every 10 ms (Linux /proc)."""

    def __enter__(self) -> _PeakRss:
        self.start = self.peak = self._rss()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0


def run_case(argv: list[str], work: Path) -> dict[str, Any]:
    """Run one argv in this process, inside `work`; what the contract checks need."""
    out, err = io.StringIO(), io.StringIO()
    before_out, before_rest = _tree(work / "out"), _tree(work, skip=work / "out")
    began = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _PeakRss() as rss:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: a flag that does not parse
            rc = exc.code if isinstance(exc.code, int) else 2
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    outside = _tree(work, skip=work / "out")
    return {
        "rc": rc,
        "stderr": lines,
        "seconds": time.perf_counter() - began,
        "written": _tree(work / "out") != before_out,
        "outside": sorted(set(outside.items()) ^ set(before_rest.items()))[:3],
        "allocated": rss.peak - rss.start,
        "traceback": "Traceback" in out.getvalue() + err.getvalue(),
    }


def violations(argv: list[str], result: dict[str, Any]) -> list[str]:
    """Broken promises of one run (empty when it kept the contract)."""
    bad = []
    if result["rc"] not in (0, 2):
        bad.append(f"exit {result['rc']}")
    if result["traceback"]:
        bad.append("traceback")
    # `prune` flag cases carry a second mistake on purpose (COMPANION): a checker that reports every
    # problem names both, one line each.
    allowed = 1 + (argv[-4:-2] == COMPANION and any("sparsit" in line for line in result["stderr"]))
    if result["rc"] == 2 and argv[0] != "cluster" and not 1 <= len(result["stderr"]) <= allowed:
        bad.append(f"{len(result['stderr'])} stderr lines")
    if result["rc"] == 2 and argv[0] == "cluster" and len(result["stderr"]) > 1:
        bad.append(f"{len(result['stderr'])} stderr lines")
    if result["rc"] != 0 and result["written"]:
        bad.append("changed the output folder")
    if result["outside"]:
        bad.append(f"changed files outside the output folder: {result['outside']}")
    if result["allocated"] > OVER_GB:
        bad.append(f"allocated {result['allocated'] / 1e9:.1f} GB")
    return bad


COUNTERS = ("inputs", "exit0", "exit2", "exit70", "tracebacks", "over_1gb", "outside_changes")
# Imported before the first run, so that a run's allocation is its own: torch and timm (0.9 GB, which the
# first input naming a model would otherwise count), and what the issue-24 families' commands import.
WARM = ("torch", "timm")
WARM_HEAVY = ("mlflow", "optuna", "ray.tune", "ray.train")


def fuzz(
    kinds: tuple[str, ...],
    per_kind: int,
    seed: int,
    work: Path,
    on_case: Callable[[str, list[str], dict[str, Any]], None] | None = None,
    per_heavy_kind: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run every case; per kind: counts (`COUNTERS`), violations, timings and the peak RSS. The runs'
    working directory is the kind's scratch folder, so a relative path they write lands where it is watched."""
    import logging

    logging.disable(logging.WARNING)  # MLflow/Ray warnings are not the CLI's error lines
    for module in WARM + (WARM_HEAVY if set(kinds) & set(HEAVY_KINDS) else ()):
        importlib.import_module(module)
    report: dict[str, dict[str, Any]] = {}
    home = Path.cwd()
    for kind in kinds:
        stats: dict[str, Any] = {c: 0 for c in COUNTERS} | {"violations": [], "seconds": []}
        count = per_kind if per_heavy_kind is None or kind not in HEAVY_KINDS else per_heavy_kind
        (work / kind).mkdir(parents=True, exist_ok=True)
        os.chdir(work / kind)
        try:
            for argv in cases(kind, count, seed, work / kind):
                result = run_case(argv, work / kind)
                stats["inputs"] += 1
                code = {0: "exit0", 2: "exit2", 70: "exit70"}.get(result["rc"], "other")
                stats[code] = stats.get(code, 0) + 1
                stats["tracebacks"] += result["traceback"]
                stats["over_1gb"] += result["allocated"] > OVER_GB
                stats["outside_changes"] += bool(result["outside"])
                stats["seconds"].append(result["seconds"])
                stats["violations"] += [(argv, v) for v in violations(argv, result)]
                if on_case:
                    on_case(kind, argv, result)
        finally:
            os.chdir(home)
        stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report[kind] = stats
    return report


def main_bench() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=2000)
    parser.add_argument(
        "--per-heavy-kind", type=int, default=100, help=f"inputs of each of {', '.join(HEAVY_KINDS)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="ovit-fuzz-"))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    began = time.perf_counter()
    report = fuzz(tuple(args.kinds), args.per_kind, args.seed, work, per_heavy_kind=args.per_heavy_kind)
    setting = (
        f"imports: peak RSS {base_rss:.0f} MB; total {time.perf_counter() - began:.0f} s; "
        f"{results.load_average()}"
    )
    print(setting)
    columns = [
        "kind",
        "inputs",
        "exit 0",
        "exit 2",
        "exit 70",
        "tracebacks",
        "runs over 1 GB",
        "changed outside the folder",
        "violations",
        "median ms",
        "max ms",
        "peak RSS MB",
    ]
    rows = []
    for kind, s in report.items():
        seconds = sorted(s["seconds"])
        rows.append(
            [kind, *(s[c] for c in COUNTERS), len(s["violations"])]
            + [
                round(seconds[len(seconds) // 2] * 1000, 1),
                round(seconds[-1] * 1000),
                round(s["peak_rss_mb"]),
            ]
        )
        print(" | ".join(str(cell) for cell in rows[-1]))
        for argv, problem in s["violations"][:5]:
            print(f"  {problem}: {' '.join(argv)[:200]}")
    totals = {c: sum(s[c] for s in report.values()) for c in COUNTERS}
    failed = sum(len(s["violations"]) for s in report.values())
    peak = max(s["peak_rss_mb"] for s in report.values())
    caveat = f"seed {args.seed}; must be 0"
    results.write_results(
        "fuzz",
        title="Fuzzing user input",
        headline=[
            results.headline(
                "inputs tried", totals["inputs"], "", f"seed {args.seed}; peak RSS {peak:.0f} MB"
            ),
            results.headline("tracebacks", totals["tracebacks"], "", caveat),
            results.headline("exit 70 (internal error)", totals["exit70"], "", caveat),
            results.headline("runs allocating over 1 GB", totals["over_1gb"], "", caveat),
            results.headline(
                "runs changing files outside the output folder", totals["outside_changes"], "", caveat
            ),
            results.headline("contract violations", failed, "", caveat),
        ],
        tables=[results.table("per input family", columns, rows)],
        notes=(
            "The contract: exit 0 or 2, no traceback, one stderr line per failure, the output folder left as "
            "it was on failure, no file outside the output folder changed (victim files, a user's database "
            "and an Optuna store sit beside it), under 1 GB allocated per run (RSS sampled every 10 ms). "
            "Families: mutated sweep files, search spaces and cluster files, bad flag values; issue 24's "
            "storage URLs (credentials in every form, foreign and non-SQLite databases, hostile outboxes "
            "replayed by `sync-mlflow`), oddly named folders holding an outbox and a store, counts "
            "beyond the bound table, doctored model cards and damaged weights beside an exported model "
            "(`evaluate`, `prune --checkpoint`), and a depth sweep's attention/activation counts and samplers "
            f"(`sweep --dry-run`). {setting}."
        ),
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_bench())
