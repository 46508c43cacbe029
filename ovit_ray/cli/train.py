"""`ovit-ray train [CONFIG.yaml]`: one gradual-pruning run (Ray Train for several workers), from a YAML file of
its knobs and/or one flag per knob; a sweep of one trial through the one driver (MLflow, Parquet, display)."""

from __future__ import annotations

import argparse

HELP = "one gradual-pruning run (Ray Train, MLflow, Parquet)"
DEFAULTS = {"targets": [0.5, 0.75, 0.9]}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.cli.experiment import add_knob_flags, add_run_flags
    from ovit_ray.orchestration.kinds.gradual import GradualSpec

    p = subparsers.add_parser("train", help=HELP, description=__doc__)
    p.add_argument("config", nargs="?", help="YAML file of knobs (optional; flags override it)")
    add_knob_flags(p, GradualSpec, skip=("strategy",), defaults=DEFAULTS)
    p.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="worker failures a run survives (it resumes from its last checkpoint)",
    )
    add_run_flags(p, "runs/train")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.cli.experiment import knob_values, run_command
    from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
    from ovit_ray.orchestration.kinds.gradual import GradualSpec

    values = {**DEFAULTS, **(read_yaml_mapping(args.config, "config file") if args.config else {})}
    return run_command(
        args,
        "gradual",
        "train",
        knob_values(args, GradualSpec, values),
        experiment=args.experiment or "ovit-ray-train",
    )
