"""Pruner speed and peak memory on DeiT-Tiny / DeiT-Small layer shapes (issue 2, "Benchmarks" and "Targets").

Why random weights and gradients: timing depends only on shapes, so the library's own path is run
(`FisherSums` accumulation, `Pruner.plan`, `Pruner.apply`) on the prunable layers of an untrained timm
DeiT, fed a small pool of pre-drawn random gradients (drawing them is not timed). Parts reported:

- Fisher build: folding m gradients into the block sums (`FisherSums.add`/`flush`), linear in m;
- plan (elimination): dampening, batched Cholesky inverse and greedy oViT elimination, independent of m;
- apply: selecting 50% and writing the exact OBS update (another batched Cholesky solve).

Each (model, B) runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own. Fisher times for all
m come from one run: the sums are flushed and the clock read when m reaches each requested value, which
is exactly the time to accumulate that many gradients. Plan and apply do not depend on m, so they are
measured once per (model, B).

    .venv/bin/python benchmarks/bench_pruner_speed.py                       # full grid
    .venv/bin/python benchmarks/bench_pruner_speed.py --model small -B 192 -m 256   # 20 GB memory target
    .venv/bin/python benchmarks/bench_pruner_speed.py --layer 384x384       # 1 s target (median of 5)
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ovit_ray.models import create_model
from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning.gradients import FisherSums, collect_fisher
from ovit_ray.pruning.settings import DTYPES

MODELS = {"tiny": "deit_tiny_patch16_224", "small": "deit_small_patch16_224"}
GIB = 2**30
# Same gradient-buffer budget as a real collection, so flushes batch the same number of gradients.
BUFFER_BYTES: int = inspect.signature(collect_fisher).parameters["buffer_bytes"].default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=list(MODELS), choices=list(MODELS), help="DeiT shapes (default: both)")
    p.add_argument("--block-size", "-B", nargs="+", type=int,
                   help="block sizes (default: 16 64 192 256; with --layer: 64)")
    p.add_argument("--num-grads", "-m", nargs="+", type=int,
                   help="numbers of gradients (default: 64 256 1024; with --layer: 256)")
    p.add_argument("--damp", type=float, default=1e-7)
    p.add_argument("--dtype", default="float64", choices=list(DTYPES),
                   help="Fisher sums and elimination precision (default: float64; float32 halves memory)")
    p.add_argument("--sparsity", type=float, default=0.5, help="sparsity for the apply step (default: 0.5)")
    p.add_argument("--blocks", type=int, default=None,
                   help="time only the first N transformer blocks and scale times to all 12 (rows are labelled)")
    p.add_argument("--max-measured-grads", type=int, default=None,
                   help="accumulate at most this many gradients; larger m are extrapolated linearly (labelled)")
    p.add_argument("--grad-pool", type=int, default=4, help="distinct pre-drawn random gradients cycled (default: 4)")
    p.add_argument("--grad-scale", type=float, default=1e-3,
                   help="std of the random gradients (default: 1e-3, the size of mean-loss gradients; with N(0, 1) "
                        "gradients fp32 rounding in the sums exceeds lambda=1e-7 and the Cholesky fails)")
    p.add_argument("--max-fisher-gib", type=float, default=20.0,
                   help="skip (model, B) whose Fisher sums d*B*itemsize bytes exceed this (default: 20)")
    p.add_argument("--layer", metavar="OUTxIN", help="time one OUTxIN layer instead (e.g. 384x384): median of --repeats")
    p.add_argument("--repeats", type=int, default=5, help="repeats in --layer mode (default: 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads in the subprocesses (default: torch's choice, one per core)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess (default: 3600)")
    p.add_argument("--out", help="also write the rows as JSON lines to OUT/speed.jsonl")
    p.add_argument("--child", help=argparse.SUPPRESS)  # JSON config of one subprocess run
    return p.parse_args(argv)


class Layer(nn.Module):
    """One bias-free Linear named like a timm projection, for the single-layer target."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.layer = nn.Linear(in_features, out_features, bias=False)


def prunable(config: Mapping) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """The model and the parameters to prune: a DeiT's prunable layers (maybe its first N blocks), or one layer."""
    if config.get("layer"):
        out_features, in_features = config["layer"]
        model = Layer(out_features, in_features)
        return model, select_prunable(model, [r"layer\.weight"])
    model = create_model(MODELS[config["model"]])
    params = select_prunable(model, DEFAULT_PATTERNS)
    if config.get("blocks"):
        params = {n: p for n, p in params.items() if int(n.split(".")[1]) < config["blocks"]}
    return model, params


def buffer_grads(total_weights: int, max_m: int, dtype: torch.dtype) -> int:
    """Gradients per flush, sized like `collect_fisher` does for this many weights."""
    return max(1, min(max_m, BUFFER_BYTES // (dtype.itemsize * total_weights)))


def accumulate(params: Mapping[str, nn.Parameter], block: int, grad_ms: Sequence[int], pool: Sequence[dict],
               dtype: torch.dtype) -> tuple[FisherSums, dict[int, float]]:
    """Fold max(grad_ms) pooled gradients into fresh sums; returns the sums and the elapsed seconds at each m."""
    shapes = {n: p.numel() for n, p in params.items()}
    buffer = buffer_grads(sum(shapes.values()), max(grad_ms), dtype)
    sums = FisherSums(shapes, block, buffer, torch.device("cpu"), dtype)
    marks, elapsed = set(grad_ms), {}
    began = time.perf_counter()
    for k in range(1, max(grad_ms) + 1):
        sums.add(pool[k % len(pool)])
        if k in marks:
            sums.flush()
            elapsed[k] = time.perf_counter() - began
    return sums, elapsed


def plan_and_apply(model: nn.Module, params: Mapping[str, nn.Parameter], settings: PruneSettings,
                   sums: FisherSums, sparsity: float) -> tuple[float, float]:
    """Seconds for Pruner.plan() and Pruner.apply(sparsity) on precomputed sums."""
    pruner = Pruner(model, params, MaskSet.dense(params), settings)
    pruner.fisher = sums
    began = time.perf_counter()
    pruner.plan()
    planned = time.perf_counter()
    pruner.apply(sparsity)
    return planned - began, time.perf_counter() - planned


def child(config: dict) -> dict:
    """One (model, B) or single-layer run in this process; returns timings and this process's peak RSS."""
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model, params = prunable(config)
    scale = config["grad_scale"]
    pool = [{n: torch.randn(p.numel()) * scale for n, p in params.items()} for _ in range(config["grad_pool"])]
    block, grad_ms = config["block_size"], sorted(config["measured_ms"])
    settings = PruneSettings(method="ovit", block_size=block, num_grads=max(grad_ms), damp=config["damp"],
                             dtype=config["dtype"])
    result = {"weights": sum(p.numel() for p in params.values())}
    if config.get("layer"):
        parts = {"fisher_s": [], "plan_s": [], "apply_s": [], "total_s": []}
        for _ in range(config["repeats"]):
            sums, elapsed = accumulate(params, block, grad_ms, pool, settings.torch_dtype)
            plan_s, apply_s = plan_and_apply(model, params, settings, sums, config["sparsity"])
            for key, value in zip(parts, (elapsed[max(grad_ms)], plan_s, apply_s), strict=False):
                parts[key].append(value)
            parts["total_s"].append(elapsed[max(grad_ms)] + plan_s + apply_s)
            del sums
        result.update({k: statistics.median(v) for k, v in parts.items()}, runs=parts)
    else:
        sums, elapsed = accumulate(params, block, grad_ms, pool, settings.torch_dtype)
        plan_s, apply_s = plan_and_apply(model, params, settings, sums, config["sparsity"])
        result.update(fisher_s={str(m): s for m, s in elapsed.items()}, plan_s=plan_s, apply_s=apply_s)
    result["threads"] = torch.get_num_threads()
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return result


def run_child(config: dict, args: argparse.Namespace) -> dict:
    """Run `child(config)` in a fresh interpreter and parse its last output line."""
    config = {**config, "threads": args.threads}
    timeout = args.timeout
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed for {config}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def full_weights(model_key: str) -> int:
    """Prunable weights of the whole model, without building the Fisher."""
    return sum(p.numel() for p in select_prunable(create_model(MODELS[model_key]), DEFAULT_PATTERNS).values())


def grid_rows(args: argparse.Namespace) -> list[dict]:
    """Every (model, B, m) row of the table, one subprocess per (model, B)."""
    rows = []
    for model_key in args.model:
        depth = len(create_model(MODELS[model_key]).blocks)
        weights = full_weights(model_key)
        for block in args.block_size:
            need = weights * block * DTYPES[args.dtype].itemsize / GIB
            base = {"model": f"DeiT-{model_key.capitalize()}", "weights": weights, "B": block}
            if need > args.max_fisher_gib:
                rows += [{**base, "m": m, "note": f"skipped: needs {need:.1f} GiB for the {args.dtype} Fisher sums"}
                         for m in args.num_grads]
                print(f"{base['model']} B={block}: skipped, needs {need:.1f} GiB", flush=True)
                continue
            cap = args.max_measured_grads
            measured = sorted({m if cap is None else min(m, cap) for m in args.num_grads})
            config = {"model": model_key, "block_size": block, "measured_ms": measured, "damp": args.damp,
                      "sparsity": args.sparsity, "blocks": args.blocks, "grad_pool": args.grad_pool, "dtype": args.dtype,
                      "grad_scale": args.grad_scale}
            began = time.perf_counter()
            res = run_child(config, args)
            scale = 1.0 if not args.blocks or args.blocks >= depth else depth / args.blocks
            notes = [] if scale == 1.0 else [f"measured on {args.blocks} of {depth} blocks, scaled"]
            for m in args.num_grads:
                got = min(m, cap) if cap else m
                fisher = res["fisher_s"][str(got)] * m / got * scale
                note = notes + ([f"Fisher extrapolated from {got} grads"] if got != m else [])
                rss_note = "" if scale == 1.0 else f" ({args.blocks} blocks)"
                rows.append({**base, "m": m, "fisher_s": fisher, "plan_s": res["plan_s"] * scale,
                             "apply_s": res["apply_s"] * scale, "peak_rss_gib": res["peak_rss_gib"],
                             "rss_note": rss_note, "note": "; ".join(note)})
            print(f"{base['model']} B={block}: done in {time.perf_counter() - began:.0f} s", flush=True)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The speed table; plan/apply/RSS are per (model, B) and repeat across m."""
    lines = ["| model | weights | B | m | Fisher build (s) | elimination / plan (s) | apply 50% (s) | total (s) "
             "| peak RSS (GiB) | note |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "fisher_s" not in r:
            lines.append(f"| {r['model']} | {r['weights'] / 1e6:.1f}M | {r['B']} | {r['m']} | - | - | - | - | - | {r['note']} |")
            continue
        total = r["fisher_s"] + r["plan_s"] + r["apply_s"]
        lines.append(f"| {r['model']} | {r['weights'] / 1e6:.1f}M | {r['B']} | {r['m']} | {r['fisher_s']:.2f} "
                     f"| {r['plan_s']:.2f} | {r['apply_s']:.2f} | {total:.2f} | {r['peak_rss_gib']:.2f}{r['rss_note']} "
                     f"| {r['note']} |")
    return "\n".join(lines)


def layer_mode(args: argparse.Namespace) -> tuple[str, list[dict]]:
    """The single-layer target: median of repeats for each part, in one fresh subprocess."""
    out_features, in_features = (int(v) for v in args.layer.lower().split("x"))
    block, m = args.block_size[0], args.num_grads[0]
    config = {"layer": [out_features, in_features], "block_size": block, "measured_ms": [m], "damp": args.damp,
              "dtype": args.dtype,
              "sparsity": args.sparsity, "grad_pool": args.grad_pool, "grad_scale": args.grad_scale,
              "repeats": args.repeats}
    res = run_child(config, args)
    row = {"layer": args.layer, "B": block, "m": m, **{k: res[k] for k in ("weights", "fisher_s", "plan_s", "apply_s",
                                                                             "total_s", "peak_rss_gib", "runs")}}
    text = "\n".join([
        "| layer | B | m | sparsity | Fisher build (s) | elimination / plan (s) | apply (s) | total (s) | peak RSS (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.layer} | {block} | {m} | {args.sparsity:g} | {res['fisher_s']:.3f} | {res['plan_s']:.3f} "
        f"| {res['apply_s']:.3f} | {res['total_s']:.3f} | {res['peak_rss_gib']:.2f} |",
        "",
        f"median of {args.repeats} repeats per part; total = median of per-repeat totals; target < 1 s: "
        + ("met" if res["total_s"] < 1 else "MISSED"),
    ])
    return text, [row]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    layer_defaults = bool(args.layer)
    args.block_size = args.block_size or ([64] if layer_defaults else [16, 64, 192, 256])
    args.num_grads = args.num_grads or ([256] if layer_defaults else [64, 256, 1024])
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.layer:
        text, rows = layer_mode(args)
    else:
        rows = grid_rows(args)
        text = markdown(rows)
    print(f"\n{text}\n\nthreads: {args.threads or torch.get_num_threads()}, torch {torch.__version__}; times on random weights "
          f"and gradients, ovit method, {args.dtype} Fisher and elimination")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "speed.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
