"""Per-trial orchestration overhead of a sweep: trial wall time minus time inside the training loop.

Runs a grid of trivial trials (one epoch of gradual pruning on digits, one at a time, so no queueing)
through `run_sweep`, once on the light path (1 worker: the loop inside the Tune trial) and once on the
Train V2 path (2 workers: a TorchTrainer per trial). Reports the median over trials of
  in-trial overhead  = trial function wall - loop seconds (model/data set-up, Tune reports, checkpoints)
  per-trial overhead = gap between consecutive trial ends (trials run one at a time) - loop seconds,
                       which adds Tune's actor start-up and scheduling.
Usage: python benchmarks/bench_sweep_overhead.py [--trials 5] [--out runs/bench_overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import results_file as results
import yaml

from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tune.sweep import run_sweep


def bench(path_name: str, workers: int, cpus: float, trials: int, out: Path) -> dict[str, float]:
    sweep = {
        "name": f"overhead_{path_name}",
        "train": {"targets": [0.5], "window_epochs": 1, "num_grads": 16},
        "search": {
            "space": "fixed",
            "algorithm": "grid",
            "max_concurrent_trials": 1,
            "overrides": {"seed": {"grid": list(range(trials))}},
        },
        "resources": {"workers": workers, "cpus_per_worker": cpus},
    }
    file = Path(tempfile.mkdtemp()) / "sweeps" / "bench.yaml"
    file.parent.mkdir()
    file.write_text(yaml.safe_dump(sweep))
    began = time.perf_counter()
    run_sweep(file, out / path_name)
    wall = time.perf_counter() - began
    rows = sorted(read_rows(out / path_name / "results.parquet"), key=lambda r: _end(out, path_name, r))
    ends = [_end(out, path_name, r) for r in rows]
    gaps = [b - a - r["loop_seconds"] for a, b, r in zip(ends, ends[1:], rows[1:], strict=False)]
    return {
        "median_in_trial_overhead_s": statistics.median(r["overhead_seconds"] for r in rows),
        "median_per_trial_overhead_s": statistics.median(gaps),
        "sweep_wall_s": wall,
        "median_loop_s": statistics.median(r["loop_seconds"] for r in rows),
    }


def _end(out: Path, name: str, row: dict) -> float:
    """Wall-clock time of a trial's last result (Tune's result.json in the trial directory)."""
    lines = (
        (out / name / "ray" / f"overhead_{name}" / row["trial_id"] / "result.json").read_text().splitlines()
    )
    return float(json.loads(lines[-1])["timestamp"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", default="runs/bench_overhead")
    parser.add_argument("--paths", nargs="+", default=["light", "train"], choices=["light", "train"])
    args = parser.parse_args()
    setups = {"light": (1, 1.0), "train": (2, 0.9)}
    os.environ["OVIT_RAY_SEARCH_SPACES"] = str(Path(__file__).resolve().parents[1] / "search_spaces")
    found = {}
    for name in args.paths:
        workers, cpus = setups[name]
        found[name] = bench(name, workers, cpus, args.trials, Path(args.out))
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in found[name].items()), flush=True)
    results.write_results(
        "sweep_overhead",
        title="Sweeps: per-trial orchestration overhead",
        headline=[
            results.headline(
                "sweep overhead per trial, light path",
                round(found["light"]["median_per_trial_overhead_s"], 2),
                "s",
                f"median of {args.trials} trivial trials; target < 5 s",
            )
        ]
        if "light" in found
        else [],
        tables=[
            results.table_of_dicts("medians over trials (s)", [{"path": k, **v} for k, v in found.items()])
        ],
        notes="Per-trial overhead: the gap between consecutive trial ends (one trial at a time) minus the time in "
        "the training loop; in-trial overhead: the trial function's wall time minus the loop.",
    )


if __name__ == "__main__":
    main()
