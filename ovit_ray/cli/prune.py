"""`ovit-ray prune`: one-shot pruning of a model with several methods and sparsities."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovit_ray.cli import prune_structured
from ovit_ray.pruning.methods import method_names
from ovit_ray.pruning.names import DEFAULT_PATTERNS, DTYPE_NAMES, SCOPES, STRUCTURED_METHODS, parse_pattern

# A row is the same result when all of these match; such rows are kept, never recomputed or duplicated.
KEY_COLUMNS = [
    "method",
    "pattern",
    "scope",
    "target_sparsity",
    "block_size",
    "num_grads",
    "damp",
    "grad_batch_size",
    "dtype",
    "seed",
    "model_source",
]
TABLE_COLUMNS = [
    "method",
    "pattern",
    "target_sparsity",
    "achieved_sparsity",
    "top1",
    "val_top1",
    "top1_dense",
    "prune_seconds",
    "peak_rss_mb",
    "flops_nonzero",
]


HELP = "one-shot pruning: methods x sparsities, top-1 before/after"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("prune", help=HELP, description=__doc__)
    p.add_argument("--model", default="digits-vit", help="preset or timm model name (default: digits-vit)")
    p.add_argument("--checkpoint", help="weights to start from (.pt or .safetensors)")
    p.add_argument("--dataset", help="digits, lfw, imagefolder or cifar10 (default: the preset's dataset)")
    p.add_argument("--data-root", help="directory of an imagefolder or cifar10 dataset")
    p.add_argument(
        "--method",
        nargs="+",
        default=list(method_names()),
        choices=method_names() + STRUCTURED_METHODS,
        metavar="METHOD",
        help=f"one or more unstructured methods of {', '.join(method_names())} (default: all of them), "
        f"or structured ones of {', '.join(STRUCTURED_METHODS)} (with --flops-ratio)",
    )
    p.add_argument(
        "--sparsity",
        nargs="+",
        type=float,
        default=[0.5, 0.8, 0.9],
        metavar="S",
        help="target sparsities in [0, 1) (default: 0.5 0.8 0.9)",
    )
    p.add_argument("--pattern", help="N:M semi-structured masks, e.g. 2:4 (sets the sparsity to 1 - N/M)")
    p.add_argument(
        "--scope",
        default="global",
        choices=SCOPES,
        help="one threshold over all layers (global) or per layer (uniform)",
    )
    p.add_argument(
        "--block-size", "-B", type=int, default=64, help="Fisher block size B, int > 0 (default: 64)"
    )
    p.add_argument(
        "--num-grads", "-m", type=int, default=128, help="number of gradients m, int > 0 (default: 128)"
    )
    p.add_argument("--damp", type=float, default=1e-7, help="absolute dampening lambda, > 0 (default: 1e-7)")
    p.add_argument(
        "--grad-batch-size", type=int, default=16, help="images per gradient, int > 0 (default: 16)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPE_NAMES,
        help="precision of the greedy elimination; the Fisher sums and their inverse stay float64, which gives "
        "the float64 masks (>= 99.998%% agreement measured, BENCHMARKS.md) (default: float32)",
    )
    p.add_argument(
        "--params",
        nargs="+",
        default=list(DEFAULT_PATTERNS),
        metavar="REGEX",
        help="regular expressions (full match) of the prunable parameter names",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of gradient sampling, int >= 0 (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--out",
        help="output directory for results.parquet (default: runs/prune, runs/prune-structured for "
        "structured methods)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    prune_structured.add_flags(p)
    p.set_defaults(func=run)


def _check_sparsities(values: list[float]) -> None:
    for value in values:
        if not 0 <= value < 1:
            raise ValueError(f"--sparsity: must be in [0, 1), got {value}")


def run(args: argparse.Namespace) -> int:
    from ovit_ray.pruning import PruneSettings

    structured = [m for m in args.method if m in STRUCTURED_METHODS]
    if args.then and not structured:
        raise ValueError(
            f"--then: follows a structured --method ({', '.join(STRUCTURED_METHODS)}), got {args.method}"
        )
    if structured or args.flops_ratio or args.latency_ratio:
        unstructured = [m for m in args.method if m not in STRUCTURED_METHODS]
        if not structured:
            flag = "--flops-ratio" if args.flops_ratio else "--latency-ratio"
            raise ValueError(f"{flag}: needs a structured --method ({', '.join(STRUCTURED_METHODS)})")
        prune_structured.check(args, structured, unstructured)
        if args.then and not args.pattern:
            _check_sparsities(args.sparsity)
        return prune_structured.run(args, structured)

    pattern = parse_pattern(args.pattern) if args.pattern else None
    sparsities: list[float | None] = [None] if pattern else sorted(set(args.sparsity))
    if not pattern:
        _check_sparsities(args.sparsity)
    settings = [
        PruneSettings(
            method=method,
            block_size=args.block_size,
            num_grads=args.num_grads,
            damp=args.damp,
            grad_batch_size=args.grad_batch_size,
            pattern=pattern,
            scope=args.scope,
            dtype=args.dtype,
        )
        for method in dict.fromkeys(args.method)
    ]
    # Flags are checked: now torch, timm and the datasets (~0.8 GB, seconds), not for a bad value.
    from ovit_ray.data import num_samples
    from ovit_ray.orchestration.results import RESULTS_FILE
    from ovit_ray.orchestration.results.parquet import append_rows, print_table
    from ovit_ray.orchestration.results.schemas import PRUNE_RESULTS
    from ovit_ray.training.oneshot import oneshot_rows
    from ovit_ray.training.setup import build_model_and_data

    out = Path(args.out or "runs/prune")
    results = out / RESULTS_FILE
    start = build_model_and_data(
        args.model,
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        data_root=args.data_root,
        progress=not args.no_progress,
    )
    print(
        f"model: {args.model} from {start.source}; dataset: {num_samples(start.data.train)} train / "
        f"{num_samples(start.data.val)} val / {num_samples(start.data.test)} test images (top-1 is on test)"
    )
    rows = oneshot_rows(
        start,
        settings,
        sparsities,
        param_patterns=args.params,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
        on_row=lambda r: print(
            f"  {r['method']:<14} s={r['target_sparsity']:.3f} "
            f"test top-1 {r['top1']:.4f} ({r['prune_seconds']:.1f} s)"
        ),
    )
    # Written once, after every row succeeded: a failure above leaves no partial results behind.
    out.mkdir(parents=True, exist_ok=True)
    added = append_rows(results, rows, KEY_COLUMNS, PRUNE_RESULTS)
    print_table(rows, TABLE_COLUMNS, title=f"one-shot pruning of {args.model}")
    print(
        f"{added} new row(s) -> {results}"
        + ("" if added == len(rows) else f" ({len(rows) - added} already there were kept unchanged)")
    )
    return 0
