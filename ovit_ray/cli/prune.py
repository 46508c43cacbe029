"""`ovit-ray prune`: one-shot pruning of a model with several methods and sparsities (the `oneshot` kind), or
structured pruning of heads and neurons under MACs or latency budgets (the `structured` kind), run in this
process through the one driver: the same folder, rows, MLflow runs and report as a sweep. Every pruned model
is kept; running the same command again resumes instead of computing anything twice."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "one-shot pruning: methods x sparsities (or structured budgets), top-1 before/after"

# knobs whose flag is not `--knob-name` (what an error line names)
FLAGS = {
    "sparsities": "--sparsity",
    "patterns": "--params",
    "then_method": "--then",
    "then_sparsity": "--sparsity",
    "then_pattern": "--pattern",
    "throughput_batch": "--speed-batch",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.pruning.methods import method_names
    from ovit_ray.pruning.names import DTYPE_NAMES, SCOPES, STRUCTURED_METHODS

    p = subparsers.add_parser("prune", help=HELP, description=__doc__)
    p.add_argument("--model", default="digits-vit", help="preset or timm model name (default: digits-vit)")
    p.add_argument("--checkpoint", help="weights to start from (.pt or .safetensors)")
    p.add_argument("--dataset", help="digits, lfw, imagefolder or cifar10 (default: the preset's dataset)")
    p.add_argument("--data-root", help="directory of an imagefolder or cifar10 dataset")
    p.add_argument(
        "--method",
        nargs="+",
        default=list(method_names()),
        choices=(*method_names(), *STRUCTURED_METHODS),
        metavar="METHOD",
        help=f"unstructured methods of {', '.join(method_names())} (default: all), or structured ones of "
        f"{', '.join(STRUCTURED_METHODS)} (with --flops-ratio or --latency-ratio)",
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
        "--num-grads", "-m", type=int, default=64, help="number of gradients m, int > 0 (default: 64)"
    )
    p.add_argument("--damp", type=float, default=1e-7, help="absolute dampening lambda, > 0 (default: 1e-7)")
    p.add_argument(
        "--grad-batch-size", type=int, default=16, help="images per gradient, int > 0 (default: 16)"
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=DTYPE_NAMES,
        help="precision of the greedy elimination (default: float32)",
    )
    p.add_argument(
        "--params",
        nargs="+",
        metavar="REGEX",
        help="regular expressions (full match) of the prunable weights (default: every block's attention and MLP weights, found in the model)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of gradient sampling and calibration, int >= 0 (default: 0)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument(
        "--time", action="store_true", help="time each pruned model against the dense one (unstructured)"
    )
    p.add_argument(
        "--out", help="output folder (default: runs/prune, runs/prune-structured for structured methods)"
    )
    p.add_argument("--verbose", action="store_true", help="show progress and library output live")
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)  # kept for old scripts
    g = p.add_argument_group(f"structured methods ({', '.join(STRUCTURED_METHODS)})")
    g.add_argument(
        "--flops-ratio",
        nargs="+",
        type=float,
        metavar="R",
        help="budgets: shares of the dense model's MACs, each in (0, 1]",
    )
    g.add_argument(
        "--latency-ratio",
        nargs="+",
        type=float,
        metavar="R",
        help="budgets: shares of the dense batch-1 latency, each in (0, 1] (measured per layer on --device)",
    )
    g.add_argument(
        "--recover",
        default="none",
        choices=("none", "lsq"),
        help="lsq: least-squares rescaling of the kept heads and neurons (default: none)",
    )
    g.add_argument(
        "--token-share",
        type=float,
        default=0.0,
        help="share of the MAC reduction taken by merging tokens, in [0, 0.85] (default: 0)",
    )
    g.add_argument(
        "--round-to",
        type=int,
        default=1,
        choices=(1, 8, 32),
        help="kept MLP widths are multiples of this (default: 1)",
    )
    g.add_argument(
        "--calib-size",
        type=int,
        default=32,
        help="calibration images (taylor reads their labels too) (default: 32)",
    )
    g.add_argument(
        "--then",
        choices=method_names(),
        metavar="METHOD",
        help="then prune the shrunk model unstructured to --sparsity (its first value) or --pattern",
    )
    g.add_argument(
        "--speed-batch", type=int, default=256, help="batch size of the throughput timing (default: 256)"
    )
    g.add_argument(
        "--latency-runs", type=int, default=200, help="timed batch-1 runs per model (default: 200)"
    )
    g.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    p.set_defaults(func=run)


def _structured(args: argparse.Namespace, methods: list[str]) -> tuple[str, dict[str, Any]]:
    if not (args.flops_ratio or args.latency_ratio) or (args.flops_ratio and args.latency_ratio):
        raise ValueError(
            f"--flops-ratio: give it or --latency-ratio (one of them): the budgets of {', '.join(methods)}"
        )
    values: dict[str, Any] = {
        "budgets": args.flops_ratio or args.latency_ratio,
        "budget_kind": "macs" if args.flops_ratio else "latency",
        "recover": args.recover,
        "token_share": args.token_share,
        "round_to": args.round_to,
        "calib_size": args.calib_size,
        "device": args.device,
        "time_models": not args.no_speed,
        "throughput_batch": args.speed_batch,
        "latency_runs": args.latency_runs,
    }
    if args.then:
        values.update(then_method=args.then, block_size=args.block_size, num_grads=args.num_grads)
        values.update({"then_pattern": args.pattern} if args.pattern else {"then_sparsity": args.sparsity[0]})
    return "structured", values


def _oneshot(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    values: dict[str, Any] = {
        "sparsities": sorted(set(args.sparsity)),
        "scope": args.scope,
        "block_size": args.block_size,
        "num_grads": args.num_grads,
        "damp": args.damp,
        "grad_batch_size": args.grad_batch_size,
        "dtype": args.dtype,
        "device": args.device,
        "time_models": args.time,
    }
    if args.pattern:
        from ovit_ray.pruning.names import parse_pattern

        keep, group = parse_pattern(args.pattern)
        values.update(pattern=args.pattern, sparsities=[1 - keep / group])
    if args.params:
        values["patterns"] = list(args.params)
    return "oneshot", values


def run(args: argparse.Namespace) -> int:
    from ovit_ray.cli.experiment import as_flags, run_command
    from ovit_ray.pruning.names import STRUCTURED_METHODS

    methods = list(dict.fromkeys(args.method))
    structured = [m for m in methods if m in STRUCTURED_METHODS]
    if structured and len(structured) != len(methods):
        raise ValueError(
            f"--method: structured ({', '.join(structured)}) and unstructured methods are two commands; unstructured ones follow a structured one with --then"
        )
    if not structured and (args.flops_ratio or args.latency_ratio or args.then):
        raise ValueError(
            f"{'--then' if args.then else '--flops-ratio'}: needs a structured --method "
            f"({', '.join(STRUCTURED_METHODS)})"
        )
    try:
        kind, values = _structured(args, methods) if structured else _oneshot(args)
    except ValueError as err:  # an N:M pattern that is not one
        raise ValueError(as_flags(str(err), "prune", "oneshot", FLAGS)) from None
    shared = {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "dataset": args.dataset,
        "data_root": args.data_root,
        "seed": args.seed,
    }
    args.out = args.out or ("runs/prune-structured" if structured else "runs/prune")
    return run_command(
        args,
        kind,
        f"prune-{kind}",
        {**{k: v for k, v in shared.items() if v is not None}, **values},
        params={"method": methods},
        experiment="ovit-ray-prune",
        local=True,
        flags={**FLAGS, "budgets": "--flops-ratio" if args.flops_ratio else "--latency-ratio"},
    )
