"""`ovit-ray transfer CHECKPOINT_OR_FOLDER --dataset NAME`: fine-tune pruned models on downstream data.

Each source (a checkpoint, or every kept model in an output folder, plus the dense source model as the
reference) gets a new classification head and is fine-tuned in `sparse` mode (masks kept) and/or `dense`
mode (masks dropped); every source x mode x seed is one trial of a `transfer` sweep (Ray Tune, or this
process with --light). Rows land in `OUT/results.parquet` (top1 = transfer test top-1; source_top1 = the
source's own) and MLflow. Running it again resumes: finished jobs are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fine-tune pruned models on a downstream dataset"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.cli.experiment import add_knob_flags, add_run_flags
    from ovit_ray.orchestration.kinds.transfer import TransferKindSpec

    p = subparsers.add_parser("transfer", help=HELP, description=__doc__)
    p.add_argument(
        "source", metavar="CHECKPOINT_OR_FOLDER", help="a .safetensors/.pt checkpoint, or an output folder"
    )
    add_knob_flags(p, TransferKindSpec, skip=("checkpoint", "mode", "seed"))
    p.add_argument(
        "--mode",
        nargs="+",
        choices=["sparse", "dense"],
        default=["sparse"],
        help="sparse: keep the masks (default); dense: masks dropped",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (head init, order, augmentation)")
    p.add_argument("--methods", nargs="+", help="only sources pruned with these methods")
    p.add_argument("--no-dense-source", action="store_true", help="skip the dense source reference")
    p.add_argument("--light", action="store_true", help="run the jobs in this process instead of Ray Tune")
    add_run_flags(p, "runs/transfer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.cli.experiment import knob_values, run_command
    from ovit_ray.orchestration.kinds.transfer import TransferKindSpec, kept_sources

    source = Path(args.source)
    if source.is_file():
        found = [str(source)]
    elif source.is_dir():
        found = kept_sources(source, args.methods)
    else:
        raise FileNotFoundError(f"CHECKPOINT_OR_FOLDER: no such file or folder: {source}")
    checkpoints: list[str | None] = [*found, *([] if args.no_dense_source else [None])]
    values = {**knob_values(args, TransferKindSpec), "seeds": args.seeds}
    values.pop("mode")  # --mode takes several: a grid (params below), not a fixed value
    return run_command(
        args,
        "transfer",
        "transfer",
        values,
        params={"checkpoint": checkpoints, "mode": args.mode},
        experiment=args.experiment or "ovit-ray-transfer",
        local=args.light,
        flags={"checkpoint": "CHECKPOINT_OR_FOLDER"},
    )
