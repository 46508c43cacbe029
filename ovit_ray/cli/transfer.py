"""`ovit-ray transfer CHECKPOINT_OR_SWEEP_DIR --dataset NAME --out DIR`: fine-tune pruned models downstream.

Each source (a checkpoint, or every target checkpoint in a results folder, plus the dense source model)
gets a new classification head and is fine-tuned on the target dataset in `sparse` mode (masks kept)
and/or `dense` mode (masks dropped); several jobs fan out as Ray Tune grid trials. Rows land in
`DIR/results.parquet` (top1 = transfer test top-1, source_top1 = the source's own test top-1) and
MLflow (`DIR/mlflow.db` unless --mlflow-uri). Re-running into the same DIR runs only missing jobs.
"""

from __future__ import annotations

import argparse

HELP = "fine-tune pruned checkpoints on a downstream dataset"  # listed by `ovit-ray --help`

TABLE_COLUMNS = [
    "source_method",
    "target_sparsity",
    "achieved_sparsity",
    "dataset",
    "mode",
    "seed",
    "source_top1",
    "top1",
    "val_top1",
    "final_sparsity",
    "epochs",
    "cpu_hours",
]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("transfer", help=HELP, description=__doc__)
    p.add_argument(
        "source",
        metavar="CHECKPOINT_OR_SWEEP_DIR",
        help="a .safetensors/.pt checkpoint, or an output folder with results.parquet",
    )
    p.add_argument(
        "--dataset",
        required=True,
        nargs="+",
        help="target dataset(s): digits-5-9, lfw, cifar10, caltech101, imagefolder, ...",
    )
    p.add_argument("--data-root", help="local folder of a cifar10 / caltech101 / imagefolder dataset")
    p.add_argument("--out", required=True, help="output folder (results.parquet, mlflow.db)")
    p.add_argument("--model", default="digits-vit", help="source model name when the checkpoint does not say")
    p.add_argument(
        "--mode",
        nargs="+",
        default=["sparse"],
        choices=["sparse", "dense"],
        help="sparse: keep the masks (default); dense: masks dropped, weights as a start",
    )
    p.add_argument("--methods", nargs="+", help="only sources pruned with these methods")
    p.add_argument("--no-dense-source", action="store_true", help="skip the dense source reference")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default: 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay (default: 1e-3)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (head init, order, augmentation)")
    p.add_argument("--max-steps-per-epoch", type=int, help="cap an epoch (smoke tests)")
    p.add_argument("--light", action="store_true", help="run the jobs in this process instead of Ray Tune")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite under --out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.data import DATASET_NAMES
    from ovit_ray.orchestration.results.parquet import print_table
    from ovit_ray.orchestration.transfer.grid import find_sources, run_transfers, transfer_jobs

    for name in args.dataset:
        if name not in DATASET_NAMES:
            raise ValueError(f"--dataset: unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if args.epochs < 1:
        raise ValueError(f"--epochs: must be >= 1, got {args.epochs}")
    if not args.lr > 0:
        raise ValueError(f"--lr: must be > 0, got {args.lr}")
    sources = find_sources(
        args.source, model=args.model, methods=args.methods, dense=not args.no_dense_source
    )
    base = {
        "epochs": args.epochs,
        "lr": args.lr,
        "data_root": args.data_root,
        "max_steps_per_epoch": args.max_steps_per_epoch,
    }
    jobs = transfer_jobs(sources, args.dataset, args.mode, args.seeds, base)
    print(
        f"transfer: {len(sources)} source(s) x {len(args.dataset)} dataset(s) -> {len(jobs)} job(s) in {args.out}"
    )
    rows = run_transfers(
        jobs,
        args.out,
        light=args.light,
        mlflow_uri=args.mlflow_uri,
        progress=lambda r: print(
            f"  {r['source']:<40} {r['dataset']:<11} {r['mode']:<6} "
            f"seed {r['seed']}: test top-1 {r['top1']:.4f}",
            flush=True,
        ),
    )
    print_table(rows, [c for c in TABLE_COLUMNS if rows and c in rows[0]], title=f"transfer -> {args.out}")
    return 0
