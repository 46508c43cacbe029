"""`ovit-ray prune --method optin ... --flops-ratio R`: structured pruning (heads and MLP neurons) under a
budget of the dense MACs, the physically shrunk model timed against the dense one, optionally followed by
unstructured pruning of the shrunk model (`--then ovit --sparsity S` or `--then ovit --pattern 2:4`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovit_ray.pruning.methods import method_names
from ovit_ray.pruning.names import STRUCTURED_METHODS

KEY_COLUMNS = ["run_key", "model", "model_source"]


def _display(row: dict) -> dict[str, str]:
    """A short row for an 80-column terminal (the Parquet file has every column)."""

    def speed(key: str) -> str:
        return "-" if row.get(key) is None else f"{row[key]:.2f}x"

    then = "" if row.get("then_method") is None else f" +{row['then_method']} {row['achieved_sparsity']:.2f}"
    return {
        "method": f"{row['method']}{then}",
        "MACs": f"{row['achieved_flops_ratio']:.2f}",
        "budget": "lat " + f"{row['latency_ratio']:.2f}"
        if row.get("latency_ratio")
        else f"{row['flops_ratio']:.2f}",
        "top-1": f"{100 * row['top1']:.2f}",
        "dense": f"{100 * row['top1_dense']:.2f}",
        "x lat b1": speed("speedup_latency"),
        f"x thr b{row.get('speed_batch') or '-'}": speed("speedup_throughput"),
    }


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(f"structured methods ({', '.join(STRUCTURED_METHODS)})")
    g.add_argument(
        "--flops-ratio",
        nargs="+",
        type=float,
        metavar="R",
        help="budgets as a share of the dense model's MACs, each in (0, 1]; needed by the structured methods",
    )
    g.add_argument(
        "--latency-ratio",
        nargs="+",
        type=float,
        metavar="R",
        help="budgets as a share of the dense batch-1 latency, each in (0, 1], from per-layer latency tables "
        "measured on --device (instead of --flops-ratio)",
    )
    g.add_argument(
        "--recover",
        default="none",
        choices=("none", "lsq"),
        help="none (one-shot) or lsq: least-squares rescaling of the kept heads and neurons on the "
        "calibration images, folded into the weights (default: none)",
    )
    g.add_argument(
        "--token-share",
        type=float,
        default=0.0,
        help="share of the MAC reduction taken by merging tokens (ToMe-style), in [0, 0.85] (default: 0)",
    )
    g.add_argument(
        "--round-to",
        type=int,
        default=1,
        choices=(1, 8, 32),
        help="kept MLP widths are multiples of this: 1, 8 or 32 (default: 1)",
    )
    g.add_argument(
        "--calib-size", type=int, default=32, help="calibration images for the score, int > 0 (default: 32)"
    )
    g.add_argument(
        "--then",
        choices=method_names(),
        metavar="METHOD",
        help=f"then prune the shrunk model unstructured with one of {', '.join(method_names())} "
        "to --sparsity (its first value) or --pattern",
    )
    g.add_argument(
        "--speed-batch", type=int, default=256, help="batch size of the throughput timing (default: 256)"
    )
    g.add_argument(
        "--latency-runs", type=int, default=200, help="timed batch-1 runs per model, int > 0 (default: 200)"
    )
    g.add_argument("--no-speed", action="store_true", help="skip the speed measurement")


def check(args: argparse.Namespace, structured: list[str], unstructured: list[str]) -> None:
    """Every structured flag checked before anything heavy is imported (one error line each)."""
    if structured and unstructured:
        raise ValueError(
            f"--method: {structured} are structured and {unstructured} unstructured; run them separately "
            "or compose them with --then"
        )
    if bool(args.flops_ratio) == bool(args.latency_ratio):
        raise ValueError(
            f"--flops-ratio: give it or --latency-ratio (one of them) for the structured method(s) {structured}"
        )
    for flag, ratios in (("--flops-ratio", args.flops_ratio), ("--latency-ratio", args.latency_ratio)):
        for ratio in ratios or ():
            if not 0 < ratio <= 1:
                raise ValueError(f"{flag}: must be in (0, 1], got {ratio}")
    if args.latency_ratio and args.token_share:
        raise ValueError(f"--token-share: works with --flops-ratio budgets only, got {args.token_share}")
    if args.recover == "lsq" and args.token_share:
        raise ValueError(
            f"--recover: lsq does not rescale token-merging models, got --token-share {args.token_share}"
        )
    if not 0 <= args.token_share <= 0.85:
        raise ValueError(f"--token-share: must be in [0, 0.85], got {args.token_share}")
    for flag in ("calib_size", "speed_batch", "latency_runs"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: must be an int > 0, got {getattr(args, flag)}")


def run(args: argparse.Namespace, structured: list[str]) -> int:
    from ovit_ray.models import PRESETS
    from ovit_ray.orchestration.results import RESULTS_FILE
    from ovit_ray.orchestration.results.parquet import append_rows, print_table, read_rows
    from ovit_ray.orchestration.results.schemas import STRUCTURED_RESULTS
    from ovit_ray.pruning import PruneSettings
    from ovit_ray.pruning.names import parse_pattern
    from ovit_ray.training.setup import build_model_and_data
    from ovit_ray.training.structured import SpeedSettings, StructuredJob, structured_rows

    then = None
    if args.then:
        then = PruneSettings(
            method=args.then,
            block_size=args.block_size,
            num_grads=args.num_grads,
            damp=args.damp,
            grad_batch_size=args.grad_batch_size,
            pattern=parse_pattern(args.pattern) if args.pattern else None,
            dtype=args.dtype,
        )
    jobs = [
        StructuredJob(
            method=method,
            flops_ratio=1.0 if args.latency_ratio else ratio,
            latency_ratio=ratio if args.latency_ratio else None,
            recover=args.recover,
            token_share=args.token_share,
            round_to=args.round_to,
            calib_size=args.calib_size,
            seed=args.seed,
            then=then,
            then_sparsity=None if then is None or args.pattern else args.sparsity[0],
        )
        for method in dict.fromkeys(structured)
        for ratio in sorted(set(args.flops_ratio or args.latency_ratio), reverse=True)
    ]
    out = Path(args.out or "runs/prune-structured")
    results = out / RESULTS_FILE
    done = (
        {r["run_key"] for r in read_rows(results) if r["model"] == args.model} if results.exists() else set()
    )
    todo = [j for j in jobs if j.run_key not in done]
    start = build_model_and_data(
        args.model,
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        data_root=args.data_root,
        progress=not args.no_progress,
    )
    speed = (
        None
        if args.no_speed
        else SpeedSettings(
            throughput_batch=args.speed_batch, latency_runs=args.latency_runs, device=args.device
        )
    )

    def keep(row: dict) -> None:  # one row at a time: a later failure keeps what finished
        append_rows(results, [row], KEY_COLUMNS, STRUCTURED_RESULTS)
        print(
            f"  {row['method']:<20} MACs {row['achieved_flops_ratio']:.3f} test top-1 {row['top1']:.4f}"
            + (f" speed-up {row['speedup_throughput']:.2f}x" if "speedup_throughput" in row else "")
        )

    preset = PRESETS.get(args.model)
    identity = {"dataset": args.dataset or (preset.dataset if preset else "digits"), "split_seed": 0}
    rows = structured_rows(
        start, todo, out, model_name=args.model, identity=identity, speed=speed, on_row=keep
    )
    print_table([_display(r) for r in rows], title=f"structured pruning of {args.model} (test top-1 %)")
    print(
        f"{len(rows)} new row(s) -> {results}"
        + (f" ({len(jobs) - len(todo)} already there)" if len(todo) < len(jobs) else "")
    )
    return 0
