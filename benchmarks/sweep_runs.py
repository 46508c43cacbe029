"""What the benchmark scripts share to run their experiments through the one driver (issue 23).

A benchmark builds its sweep in code (`kinds.sweep_file.sweep_from`, the same validation as a sweep file) and
runs it into a folder of its own with `tune.driver.run_sweep`, so its rows are the rows any sweep writes
(`results.parquet`, `trials.parquet`, MLflow). Running the same benchmark again resumes that folder (a local
grid skips its finished trials) or, once it finished, only reads it back; a folder holding another sweep is
refused by the driver with one line. A `--quick` run writes its results file into its output folder (or
`$OVIT_RAY_BENCH_RESULTS`), never over the page's figures in `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.kinds.sweep_file import sweep_from
from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tune.driver import run_sweep
from ovit_ray.orchestration.tune.folder import read_state

Row = dict[str, Any]


@dataclass(frozen=True)
class Ran:
    """A benchmark sweep's folder and what it holds."""

    out: Path
    rows: list[Row]  # results.parquet: one per trial and target
    trials: list[Row]  # trials.parquet: one per trial
    wall_s: float  # this call's wall time (0 when the folder had finished before)


def run_folder(
    raw: Mapping[str, Any], out: str | Path, *, path: str | Path | None = None, out_parent: Path | None = None
) -> Ran:
    """Run (or resume, or just read back) the sweep `raw` in `out`. `path`: the file it came from (named in
    errors; search spaces are found beside it); `out_parent`: where sibling sweeps' folders are (a transfer's
    sources). A failed trial is reported on stderr and left out of the rows; the benchmark goes on."""
    out = Path(out)
    sweep = sweep_from(raw, path or f"<{raw['name']}>", out_parent)
    state = read_state(out.resolve()) if out.is_dir() else None
    same = state is not None and state.get("fingerprint") == sweep.fingerprint()
    done = same and state is not None and bool(state.get("finished"))
    began = time.perf_counter()
    if not done:
        run_sweep(sweep, out, resume=same)
    wall = 0.0 if done else time.perf_counter() - began
    trials = read_rows(out / TRIALS_FILE) if (out / TRIALS_FILE).exists() else []
    failed = [t for t in trials if t["status"] == "failed"]
    if failed:
        print(
            f"{out}: {len(failed)} trial(s) failed, left out: {failed[0]['error']} (see {out / TRIALS_FILE})",
            file=sys.stderr,
        )
    rows = read_rows(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else []
    return Ran(out, rows, trials, wall)


def loop_seconds(trial: Mapping[str, Any]) -> float:
    """Seconds a trial spent inside its training loop (its loop CPU-hours over the CPUs it held)."""
    return 3600 * float(trial.get("cpu_hours") or 0.0) / float(trial.get("cpus_per_worker") or 1.0)


def parse_with_quick(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    quick: Mapping[str, Any],
    quick_out: str | None = None,
    also: str = "",
) -> argparse.Namespace:
    """`parser`'s arguments plus `--quick` (a smoke run: `quick` over the parsed values, and `--out` at its
    default becomes `quick_out`); `also`: more of what --quick changes, for its help."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {dict(quick)}{also}; its results file goes to --out (or $OVIT_RAY_BENCH_RESULTS)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(quick)
        if quick_out is not None and args.out == parser.get_default("out"):
            args.out = quick_out
    return args


def results_folder(quick: bool, out: str | Path) -> Path | None:
    """Where a run's results file goes: the page's folder (None: `write_results`' default) unless `quick`."""
    return Path(os.environ.get("OVIT_RAY_BENCH_RESULTS") or out) if quick else None
