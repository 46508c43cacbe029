"""Start-up time of `ovit-ray --help`, of every `ovit-ray CMD --help` and of the quickstart's `sweep --dry-run`
(target: median under 1 s each, without importing Ray, torch or MLflow: tests/test_cli_help.py checks those).

Each is a fresh interpreter, as a user's shell starts it (`python -m ovit_ray.cli.main`, the code of this
checkout). Prints the median and the slowest of --repeats runs per command, and the modules that take
longest to import for `--help` (python -X importtime), so a regression names its culprit.
Usage: python benchmarks/bench_help.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results_file as results

from ovit_ray.cli.main import COMMAND_MODULES

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = ["sweep", "sweeps/quickstart.yaml", "--dry-run"]  # run in ROOT


def seconds(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ovit_ray.cli.main", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    return time.perf_counter() - began


def slowest_imports(count: int = 5) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the top-level imports that cost most for `--help`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ovit_ray.cli.main", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    found = [(int(m.group(1)), m.group(2)) for m in re.finditer(r"\|\s*(\d+) \|( +\S+)$", out, re.M)]
    return sorted(((us, name.strip()) for us, name in found if not name.startswith("  ")), reverse=True)[
        :count
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    lines = ["| command | median (s) | slowest (s) |", "|---|---:|---:|"]
    print("\n".join(lines))
    medians = []
    commands = [["--help"], *([c, "--help"] for c in COMMAND_MODULES), DRY_RUN]
    for command in commands:
        times = [seconds(command) for _ in range(args.repeats)]
        medians.append(statistics.median(times))
        lines.append(f"| `ovit-ray {' '.join(command)}` | {medians[-1]:.2f} | {max(times):.2f} |")
        print(lines[-1], flush=True)
    imports = "slowest imports of `ovit-ray --help` (cumulative ms): " + ", ".join(
        f"{name} {us / 1000:.0f}" for us, name in slowest_imports()
    )
    print(f"\n{imports}")
    results.write_results(
        "cli_help",
        title="`ovit-ray --help` start-up",
        headline=[
            results.headline(
                "`ovit-ray --help` start-up",
                round(medians[0], 2),
                "s",
                f"median of {args.repeats} fresh interpreters; slowest command {max(medians):.2f} s; target < 1 s",
            ),
            results.headline(
                "`ovit-ray sweep sweeps/quickstart.yaml --dry-run`",
                round(medians[-1], 2),
                "s",
                f"median of {args.repeats} fresh interpreters; target < 1 s",
            ),
        ],
        tables=results.tables_from_markdown("\n".join(lines)),
        notes=f"A fresh interpreter per run (`python -m ovit_ray.cli.main`). {imports}.",
    )
    return 0 if max(medians) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
