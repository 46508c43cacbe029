"""Benchmark: sparsity sweep vs independent runs, and cyclic-linear vs cosine LR, on the digits preset.

    .venv/bin/python benchmarks/bench_strategies.py --seeds 0 1 2 --out runs/bench-strategies

Prints markdown tables (mean +- std over seeds): per target top-1 of each strategy, total epochs and
CPU-hours of each strategy, top-1 at the final target per LR schedule (sweep runs), and the Ray
orchestration overhead of every run (driver wall time minus rank 0's time inside the training loop).
Finished runs under --out are reused, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence

from ovit_ray.orchestration.specs.run import make_config
from ovit_ray.orchestration.train.job import RunResult, run_training
from ovit_ray.orchestration.train.strategies import compare, run_strategies


def _stat(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.6, 0.75, 0.9])
    parser.add_argument("--window-epochs", type=int, default=2)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None)
    parser.add_argument("--method", default="ovit")
    parser.add_argument("--out", default="runs/bench-strategies")
    args = parser.parse_args()

    tables, runs, lr_top1 = [], [], {"cyclic_linear": [], "cosine": []}
    for seed in args.seeds:
        config = make_config(
            {
                "targets": args.targets,
                "window_epochs": args.window_epochs,
                "seed": seed,
                "method": args.method,
                "block_size": 32,
                "num_grads": 32,
                "max_steps_per_epoch": args.max_steps_per_epoch,
                "out": args.out,
                "experiment": "bench-strategies",
            }
        )
        results = run_strategies(config, on_run=lambda r: print(f"  done {r.run_name}", flush=True))
        tables.append(compare(results))
        runs += results
        sweep = next(r for r in results if r.strategy == "sweep")
        lr_top1["cyclic_linear"].append(sweep.rows[-1]["top1"])
        cosine: RunResult = run_training(config.model_copy(update={"lr_schedule": "cosine"}))
        runs.append(cosine)
        lr_top1["cosine"].append(cosine.rows[-1]["top1"])

    print(
        f"\n### Sweep vs independent, digits preset, {args.method}, window {args.window_epochs}, "
        f"seeds {args.seeds}\n"
    )
    print("| target | sweep top-1 (%) | independent top-1 (%) | sweep epochs so far | independent epochs |")
    print("|---|---|---|---|---|")
    for i, target in enumerate(args.targets):
        rows = [t[i] for t in tables]
        print(
            f"| {target} | {_stat([r['sweep_top1'] for r in rows], 100)} | "
            f"{_stat([r['independent_top1'] for r in rows], 100)} | {rows[0]['sweep_epochs']} | "
            f"{rows[0]['independent_epochs']} |"
        )
    totals = [t[-1] for t in tables]
    print(f"| total | | | {totals[0]['sweep_epochs']} | {totals[0]['independent_epochs']} |")
    print(
        f"\nCPU-hours: sweep {_stat([t['sweep_cpu_hours'] for t in totals], digits=4)}, "
        f"independent {_stat([t['independent_cpu_hours'] for t in totals], digits=4)}; epoch ratio "
        f"{totals[0]['sweep_epochs'] / totals[0]['independent_epochs']:.2f}\n"
    )
    print(f"### LR schedule, top-1 (%) at the final target {args.targets[-1]} (sweep runs)\n")
    print("| schedule | top-1 (%) |\n|---|---|")
    for name, values in lr_top1.items():
        print(f"| {name} | {_stat(values, 100)} |")
    print("\n### Ray orchestration overhead per run (driver wall time - time inside the training loop)\n")
    print("| run | strategy | epochs | wall (s) | in loop (s) | overhead (s) |\n|---|---|---|---|---|---|")
    for r in runs:
        s = r.summary
        print(
            f"| {r.run_name} | {r.strategy} | {s['total_epochs']} | {s['wall_seconds']:.1f} | "
            f"{s['loop_seconds']:.1f} | {s['overhead_seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
