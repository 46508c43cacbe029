"""`ovit-ray compare-strategies`: the single-run sparsity sweep vs one independent run per target, compared per
target on test top-1, epochs, and CPU- or GPU-hours both in the training loop and as allocated (what a
cluster bills: every independent run pays its start-up again)."""

from __future__ import annotations

import argparse

HELP = "sparsity sweep vs independent runs, per target"
# Small CPU-friendly defaults on the digits preset when no config file is given.
DEFAULTS = {"targets": [0.5, 0.75, 0.9], "window_epochs": 2, "block_size": 32, "num_grads": 32}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.cli.experiment import add_knob_flags, add_run_flags
    from ovit_ray.orchestration.kinds.gradual import STRATEGIES, GradualSpec

    p = subparsers.add_parser("compare-strategies", help=HELP, description=__doc__)
    p.add_argument("config", nargs="?", help="YAML file of knobs (optional; flags override it)")
    add_knob_flags(p, GradualSpec, skip=("strategy",), defaults=DEFAULTS)
    p.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=list(STRATEGIES),
        help="sweep: one run through every target; independent: one run per target (default: both)",
    )
    add_run_flags(p, "runs/compare-strategies")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.cli.experiment import knob_values, run_command
    from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
    from ovit_ray.orchestration.kinds.gradual import GradualSpec
    from ovit_ray.orchestration.results.strategies import strategy_table

    values = {**DEFAULTS, **(read_yaml_mapping(args.config, "config file") if args.config else {})}
    return run_command(
        args,
        "gradual",
        "compare-strategies",
        knob_values(args, GradualSpec, values),
        params={"strategy": args.strategies},
        experiment=args.experiment or "ovit-ray-strategies",
        flags={"strategy": "--strategies"},
        show=strategy_table,
    )
