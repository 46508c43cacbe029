"""Load: a local sweep of many short trials, 2 at a time; does the driver's memory stay flat?

Runs `ovit-ray sweep` as a separate process (the real driver: Tune, the MLflow/Parquet callback,
the embedded Ray head) over a grid of trivial but real trials (one epoch of gradual pruning on
digits, a few steps). From outside, it samples the driver's RSS and, each time a trial lands in
results.parquet, records the RSS at that trial. Reports trials/hour, per-trial overhead (trial
wall minus time in the training loop, median; and sweep wall x concurrency / trials minus the
median loop time, which adds scheduling and start-up) and the driver's RSS growth from trial 10
to the last trial (target: under 10%).
Usage: python benchmarks/bench_load.py [--trials 50] [--concurrent 2] [--out runs/bench_load]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import results_file as results
import yaml

from ovit_ray.orchestration.results.parquet import read_rows

ROOT = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float | None:
    """Resident set size of one process (not its children: Ray's own processes are separate)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def finished_trials(results: Path) -> int:
    try:
        return pq.read_metadata(results).num_rows  # one target per trial: one row per trial
    except (OSError, ValueError):  # not written yet, or being replaced right now
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_load")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "sweeps").mkdir(parents=True)
    sweep = out / "sweeps" / "load.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "load",
                "train": {
                    "targets": [0.5],
                    "window_epochs": 1,
                    "num_grads": 16,
                    "block_size": 32,
                    "max_steps_per_epoch": 2,
                },
                "search": {
                    "space": "fixed",
                    "algorithm": "grid",
                    "max_concurrent_trials": args.concurrent,
                    "overrides": {"seed": {"grid": list(range(args.trials))}},
                },
                "resources": {"workers": 1, "cpus_per_worker": 1},
            }
        )
    )
    env = {**os.environ, "OVIT_RAY_SEARCH_SPACES": str(ROOT / "search_spaces")}
    cmd = [sys.executable, "-m", "ovit_ray.cli.main", "sweep", str(sweep), "--out", str(out / "sweep")]
    print("driver:", " ".join(cmd), flush=True)
    began = time.perf_counter()
    driver = subprocess.Popen(cmd, env=env, stdout=open(out / "driver.log", "wb"), stderr=subprocess.STDOUT)
    rss_at: dict[int, float] = {}
    peak = 0.0
    while driver.poll() is None:
        rss = rss_mib(driver.pid)
        if rss is not None:
            peak = max(peak, rss)
            done = finished_trials(out / "sweep" / "results.parquet")
            if done > 0 and done not in rss_at:
                rss_at[done] = rss
                print(
                    f"trial {done}: driver RSS {rss:.0f} MiB ({time.perf_counter() - began:.0f} s)",
                    flush=True,
                )
        time.sleep(0.5)
    wall = time.perf_counter() - began
    if driver.returncode != 0:
        sys.exit(f"sweep failed ({driver.returncode}); see {out / 'driver.log'}")
    rows = read_rows(out / "sweep" / "results.parquet")
    loop = statistics.median(r["loop_seconds"] for r in rows)
    first = min((n for n in rss_at if n >= 10), default=None)
    last = max(rss_at)
    summary = {
        "trials": len(rows),
        "concurrent": args.concurrent,
        "sweep_wall_s": round(wall, 1),
        "trials_per_hour": round(len(rows) / wall * 3600, 1),
        "median_trial_overhead_s": round(statistics.median(r["overhead_seconds"] for r in rows), 2),
        "effective_overhead_per_trial_s": round(wall * args.concurrent / len(rows) - loop, 2),
        "median_loop_s": round(loop, 2),
        "driver_peak_rss_mib": round(peak, 1),
        "rss_trial": {str(k): round(v, 1) for k, v in sorted(rss_at.items())},
    }
    if first is not None and last > first:
        summary["rss_growth_pct"] = round(100 * (rss_at[last] / rss_at[first] - 1), 2)
        summary["rss_growth_window"] = f"trial {first} -> trial {last}"
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "rss_trial"}, indent=1))
    growth = summary.get("rss_growth_pct")
    results.write_results(
        "load",
        title=f"Load: {len(rows)} short trials, {args.concurrent} at a time",
        headline=[]
        if growth is None
        else [
            results.headline(
                f"sweep driver RSS growth, {summary['rss_growth_window']}", growth, "%", "target < 10%"
            )
        ],
        tables=[
            results.table(
                "one sweep driver process",
                ["measure", "value"],
                [[k, v] for k, v in summary.items() if k != "rss_trial"],
            )
        ],
        notes=f"`ovit-ray sweep` as a separate driver process; its RSS sampled from outside whenever a trial lands "
        f"in results.parquet (every sample: {out / 'summary.json'}).",
    )


if __name__ == "__main__":
    main()
