"""`ovit-ray compare-strategies`: the single-run sparsity sweep vs one independent run per target."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovit_ray.cli.train import add_config_arguments, config_from_args, print_run

# Small CPU-friendly defaults on the digits preset when no config file is given.
DEFAULTS = {
    "targets": [0.5, 0.75, 0.9],
    "window_epochs": 2,
    "out": "runs/compare-strategies",
    "block_size": 32,
    "num_grads": 32,
    "experiment": "ovit-ray-strategies",
}


HELP = "sparsity sweep vs independent runs, per target"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare-strategies", help=HELP, description=__doc__)
    from ovit_ray.orchestration.specs.search_space import STRATEGIES

    add_config_arguments(p, DEFAULTS)
    p.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=list(STRATEGIES),
        help="sweep: one run through every target; independent: one run per target (default: both)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.results import RESULTS_FILE
    from ovit_ray.orchestration.results.parquet import print_table
    from ovit_ray.orchestration.train.strategies import compare, run_strategies

    config = config_from_args(args)
    results = run_strategies(config, args.strategies, on_run=print_run)
    unit = "gpu_hours" if config.gpus_per_worker > 0 else "cpu_hours"
    columns = ["target"] + [f"{s}_{c}" for c in ("top1", "epochs", unit) for s in args.strategies]
    print_table(compare(results), columns, title=f"sweep vs independent ({unit.replace('_', '-')})")
    print(f"rows -> {Path(config.out) / RESULTS_FILE}")
    return 0
