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
    .venv/bin/python benchmarks/bench_pruner_speed.py --elimination         # issue 14: old vs new vs ceiling

Issue 14 ("old" = the pre-issue-14 path, run in the same process on the same inputs): --layer times the old
plan/apply (LAPACK inverse, eager rank-1 elimination kept in tests/reference_elimination.py, 4 MiB chunks, apply by a second
Cholesky solve) next to the new one; --elimination times the bare elimination of a 384x384 layer for each B,
old vs new (the compiled per-block loop) and the batched torch form at panel widths 1 (eager), B/8 (the
accelerator default) and B (fully lazy), against this machine's in-cache rank-1 update speed measured in the
same run (best of chunks of 256 KiB .. 4 MiB), counting 2 * d * B^2 flops.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.models import create_model
from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning import pruner as pruner_module
from ovit_ray.pruning.gradients import FisherSums, collect_fisher, grads_per_flush
from ovit_ray.pruning.names import DTYPE_NAMES
from ovit_ray.pruning.settings import dtype_of
from ovit_ray.pruning.threads import map_chunks
from ovit_ray.tensor_math import elimination as elimination_module
from ovit_ray.tensor_math.chunking import elimination_rows, even_chunks
from ovit_ray.tensor_math.elimination import default_panel, greedy_eliminate
from ovit_ray.tensor_math.fisher import inverse_fisher

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import results_file as results  # noqa: E402  (benchmarks/results_file.py, next to this script)
from reference_elimination import reference_greedy_eliminate  # noqa: E402  (the pre-issue-14 elimination)

OLD_CHUNK_BYTES = 4 * 2**20  # the fixed chunk size before issue 14

MODELS = {"tiny": "deit_tiny_patch16_224", "small": "deit_small_patch16_224"}
GIB = 2**30
# Same gradient-buffer budget as a real collection, so flushes batch the same number of gradients.
BUFFER_BYTES: int = inspect.signature(collect_fisher).parameters["buffer_bytes"].default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", nargs="+", default=list(MODELS), choices=list(MODELS), help="DeiT shapes (default: both)"
    )
    p.add_argument(
        "--block-size",
        "-B",
        nargs="+",
        type=int,
        help="block sizes (default: 16 64 192 256; with --layer: 64)",
    )
    p.add_argument(
        "--num-grads",
        "-m",
        nargs="+",
        type=int,
        help="numbers of gradients (default: 64 256 1024; with --layer: 256)",
    )
    p.add_argument("--damp", type=float, default=1e-7)
    p.add_argument(
        "--dtype",
        default="float64",
        choices=list(DTYPE_NAMES),
        help="Fisher sums and elimination precision (default: float64; float32 halves memory)",
    )
    p.add_argument("--sparsity", type=float, default=0.5, help="sparsity for the apply step (default: 0.5)")
    p.add_argument(
        "--blocks",
        type=int,
        default=None,
        help="time only the first N transformer blocks and scale times to all 12 (rows are labelled)",
    )
    p.add_argument(
        "--max-measured-grads",
        type=int,
        default=None,
        help="accumulate at most this many gradients; larger m are extrapolated linearly (labelled)",
    )
    p.add_argument(
        "--grad-pool", type=int, default=4, help="distinct pre-drawn random gradients cycled (default: 4)"
    )
    p.add_argument(
        "--grad-scale",
        type=float,
        default=1e-3,
        help="std of the random gradients (default: 1e-3, the size of mean-loss gradients; with N(0, 1) "
        "gradients fp32 rounding in the sums exceeds lambda=1e-7 and the Cholesky fails)",
    )
    p.add_argument(
        "--max-fisher-gib",
        type=float,
        default=20.0,
        help="skip (model, B) whose Fisher sums d*B*itemsize bytes exceed this (default: 20)",
    )
    p.add_argument(
        "--layer", metavar="OUTxIN", help="time one OUTxIN layer instead (e.g. 384x384): median of --repeats"
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="repeats in --layer / --elimination mode (default: 5)"
    )
    p.add_argument(
        "--elimination",
        action="store_true",
        help="time the bare elimination of one --layer (default 384x384) per B: old, new, panels, ceiling",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in the subprocesses (default: torch's choice, one per core)",
    )
    p.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess (default: 3600)")
    p.add_argument(
        "--out", help="also write the rows as JSON lines to OUT/speed.jsonl (grid mode: and the masks)"
    )
    p.add_argument("--device", default="cpu", help="device for the grid mode (e.g. cuda; default: cpu)")
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


def accumulate(
    params: Mapping[str, nn.Parameter],
    block: int,
    grad_ms: Sequence[int],
    pool: Sequence[dict],
    dtype: torch.dtype,
) -> tuple[FisherSums, dict[int, float]]:
    """Fold max(grad_ms) pooled gradients into fresh sums; returns the sums and the elapsed seconds at each m."""
    shapes = {n: p.numel() for n, p in params.items()}
    buffer = grads_per_flush(sum(shapes.values()), max(grad_ms), dtype, BUFFER_BYTES)
    device = next(iter(params.values())).device
    sums = FisherSums(shapes, block, buffer, device, dtype)
    marks, elapsed = set(grad_ms), {}
    began = time.perf_counter()
    for k in range(1, max(grad_ms) + 1):
        sums.add(pool[k % len(pool)])
        if k in marks:
            sums.flush()
            elapsed[k] = time.perf_counter() - began
    sums.finish()  # as collect_fisher does: the buffer is freed before planning
    return sums, elapsed


def plan_and_apply(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    settings: PruneSettings,
    sums: FisherSums,
    sparsity: float,
    old: bool = False,
    save_masks: str | None = None,
) -> tuple[float, float]:
    """Seconds for Pruner.plan() and Pruner.apply(sparsity) on precomputed sums (old: the pre-issue-14 path)."""
    with old_path() if old else contextlib.nullcontext():
        if old:
            settings = PruneSettings(**{**settings.__dict__, "chunk_bytes": OLD_CHUNK_BYTES})
        pruner = Pruner(model, params, MaskSet.dense(params), settings, apply_cache_bytes=0 if old else 2**29)
        pruner.fisher = sums
        began = time.perf_counter()
        pruner.plan()
        planned = time.perf_counter()
        masks = pruner.apply(sparsity)
        if save_masks:
            torch.save(masks.state_dict(), save_masks)
        if next(iter(params.values())).is_cuda:
            torch.cuda.synchronize()
        return planned - began, time.perf_counter() - planned


def compile_kernels(block: int, dtype: torch.dtype) -> None:
    """Compile (or load from numba's disk cache) the CPU kernels that plan uses at this B before any clock starts."""
    identity = torch.eye(block, dtype=dtype).unsqueeze(0)
    greedy_eliminate(torch.ones(1, block, dtype=dtype), inverse_fisher(identity, 1, 0.0, dtype))


@contextlib.contextmanager
def old_path() -> Iterator[None]:
    """The pre-issue-14 plan: LAPACK's inverse, eager elimination, one chunk at a time (the caller
    also sets 4 MiB chunks and no downdate cache, so apply solves again). The library looks these names up
    at call time, so swapping the module attributes swaps the path; the check below proves it did."""
    calls = []

    def eager(w: torch.Tensor, h: torch.Tensor, downdates: torch.Tensor | None = None, **kw: Any) -> Any:
        calls.append(1)
        return reference_greedy_eliminate(w, h, **kw)

    saved = (elimination_module.greedy_eliminate, pruner_module.chunk_workers, pruner_module.inverse_fisher)
    elimination_module.greedy_eliminate = eager
    pruner_module.chunk_workers = lambda device: 1
    pruner_module.inverse_fisher = functools.partial(inverse_fisher, compiled=False)
    try:
        yield
    finally:
        elimination_module.greedy_eliminate, pruner_module.chunk_workers, pruner_module.inverse_fisher = saved
    if not calls:
        raise RuntimeError("the old path was not taken: the pre-issue-14 elimination never ran")


def child(config: dict) -> dict:
    """One (model, B) or single-layer run in this process; returns timings and this process's peak RSS."""
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    model, params = prunable(config)
    device = torch.device(config.get("device") or "cpu")
    model.to(device)
    scale = config["grad_scale"]
    pool = [
        {n: (torch.randn(p.numel()) * scale).to(device) for n, p in params.items()}
        for _ in range(config["grad_pool"])
    ]
    block, grad_ms = config["block_size"], sorted(config["measured_ms"])
    settings = PruneSettings(
        method="ovit",
        block_size=block,
        num_grads=max(grad_ms),
        damp=config["damp"],
        dtype=config["dtype"],
        fisher_dtype=config["dtype"],
    )
    result = {"weights": sum(p.numel() for p in params.values())}
    if device.type == "cpu":  # an accelerator runs the batched torch forms, not the CPU kernels
        compile_kernels(block, settings.torch_dtype)
    if config.get("layer"):
        parts = {
            f"{k}{tag}": [] for tag in ("", "_old") for k in ("fisher_s", "plan_s", "apply_s", "total_s")
        }
        for _ in range(config["repeats"]):
            sums, elapsed = accumulate(params, block, grad_ms, pool, settings.torch_dtype)
            for tag in ("_old", ""):  # old and new on the same sums, alternating
                plan_s, apply_s = plan_and_apply(
                    model, params, settings, sums, config["sparsity"], old=bool(tag)
                )
                for key, value in zip(
                    ("fisher_s", "plan_s", "apply_s"), (elapsed[max(grad_ms)], plan_s, apply_s), strict=True
                ):
                    parts[key + tag].append(value)
                parts["total_s" + tag].append(elapsed[max(grad_ms)] + plan_s + apply_s)
            del sums
        result.update({k: statistics.median(v) for k, v in parts.items()}, runs=parts)
    else:
        sums, elapsed = accumulate(params, block, grad_ms, pool, settings.torch_dtype)
        pool.clear()  # the stand-ins for backward passes are gone before planning, as collect_fisher's are
        # masks saved for comparing devices (the random draws are made on the CPU, so inputs are identical)
        plan_s, apply_s = plan_and_apply(
            model, params, settings, sums, config["sparsity"], save_masks=config.get("save_masks")
        )
        result.update(fisher_s={str(m): s for m, s in elapsed.items()}, plan_s=plan_s, apply_s=apply_s)
    result["threads"] = torch.get_num_threads()
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
    return result


def run_child(config: dict, args: argparse.Namespace) -> dict:
    """Run `child(config)` in a fresh interpreter and parse its last output line."""
    config = {**config, "threads": args.threads}
    timeout = args.timeout
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
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
            need = weights * block * dtype_of(args.dtype).itemsize / GIB
            base = {"model": f"DeiT-{model_key.capitalize()}", "weights": weights, "B": block}
            if need > args.max_fisher_gib:
                rows += [
                    {
                        **base,
                        "m": m,
                        "note": f"skipped: needs {need:.1f} GiB for the {args.dtype} Fisher sums",
                    }
                    for m in args.num_grads
                ]
                print(f"{base['model']} B={block}: skipped, needs {need:.1f} GiB", flush=True)
                continue
            cap = args.max_measured_grads
            measured = sorted({m if cap is None else min(m, cap) for m in args.num_grads})
            config = {
                "model": model_key,
                "block_size": block,
                "measured_ms": measured,
                "damp": args.damp,
                "sparsity": args.sparsity,
                "blocks": args.blocks,
                "grad_pool": args.grad_pool,
                "dtype": args.dtype,
                "grad_scale": args.grad_scale,
                "device": args.device,
                "save_masks": args.out
                and str(Path(args.out) / f"masks_{model_key}_B{block}_{args.device}.pt"),
            }
            began = time.perf_counter()
            res = run_child(config, args)
            scale = 1.0 if not args.blocks or args.blocks >= depth else depth / args.blocks
            notes = [] if scale == 1.0 else [f"measured on {args.blocks} of {depth} blocks, scaled"]
            for m in args.num_grads:
                got = min(m, cap) if cap else m
                fisher = res["fisher_s"][str(got)] * m / got * scale
                note = notes + ([f"Fisher extrapolated from {got} grads"] if got != m else [])
                rss_note = "" if scale == 1.0 else f" ({args.blocks} blocks)"
                rows.append(
                    {
                        **base,
                        "m": m,
                        "fisher_s": fisher,
                        "plan_s": res["plan_s"] * scale,
                        "apply_s": res["apply_s"] * scale,
                        "peak_rss_gib": res["peak_rss_gib"],
                        "rss_note": rss_note,
                        "note": "; ".join(note),
                    }
                )
            print(f"{base['model']} B={block}: done in {time.perf_counter() - began:.0f} s", flush=True)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The speed table; plan/apply/RSS are per (model, B) and repeat across m."""
    lines = [
        "| model | weights | B | m | Fisher build (s) | elimination / plan (s) | apply 50% (s) | total (s) "
        "| peak RSS (GiB) | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "fisher_s" not in r:
            lines.append(
                f"| {r['model']} | {r['weights'] / 1e6:.1f}M | {r['B']} | {r['m']} | - | - | - | - | - | {r['note']} |"
            )
            continue
        total = r["fisher_s"] + r["plan_s"] + r["apply_s"]
        lines.append(
            f"| {r['model']} | {r['weights'] / 1e6:.1f}M | {r['B']} | {r['m']} | {r['fisher_s']:.2f} "
            f"| {r['plan_s']:.2f} | {r['apply_s']:.2f} | {total:.2f} | {r['peak_rss_gib']:.2f}{r['rss_note']} "
            f"| {r['note']} |"
        )
    return "\n".join(lines)


def layer_mode(args: argparse.Namespace) -> tuple[str, list[dict]]:
    """The single-layer target: median of repeats for each part, in one fresh subprocess."""
    out_features, in_features = (int(v) for v in args.layer.lower().split("x"))
    block, m = args.block_size[0], args.num_grads[0]
    config = {
        "layer": [out_features, in_features],
        "block_size": block,
        "measured_ms": [m],
        "damp": args.damp,
        "dtype": args.dtype,
        "sparsity": args.sparsity,
        "grad_pool": args.grad_pool,
        "grad_scale": args.grad_scale,
        "repeats": args.repeats,
    }
    res = run_child(config, args)
    row = {
        "layer": args.layer,
        "B": block,
        "m": m,
        "dtype": args.dtype,
        **{k: v for k, v in res.items() if k != "threads"},
    }
    lines = [
        "| layer | dtype | B | m | sparsity | path | Fisher build (s) | elimination / plan (s) | apply (s) | total (s) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for tag, label in (("_old", "old (pre-issue-14)"), ("", "new")):
        lines.append(
            f"| {args.layer} | {args.dtype} | {block} | {m} | {args.sparsity:g} | {label} "
            f"| {res['fisher_s' + tag]:.3f} | {res['plan_s' + tag]:.3f} | {res['apply_s' + tag]:.3f} "
            f"| {res['total_s' + tag]:.3f} |"
        )
    ratios = ", ".join(f"{k} {res[k + '_old'] / res[k]:.1f}x" for k in ("plan_s", "apply_s", "total_s"))
    text = "\n".join(
        lines
        + [
            "",
            f"median of {args.repeats} repeats, old and new alternating on the same sums; "
            f"new vs old: {ratios}; peak RSS {res['peak_rss_gib']:.2f} GiB",
        ]
    )
    return text, [row]


def rank1_ceiling(block: int, dtype: torch.dtype, seconds: float = 0.3) -> float:
    """GFLOP/s of the batched in-cache rank-1 update H -= x y^T, best over chunks of 256 KiB .. 4 MiB."""
    best = 0.0
    for kib in (256, 512, 1024, 2048, 4096):
        n = max(1, kib * 2**10 // (block * block * dtype.itemsize))
        h, x, y = (
            torch.randn(n, block, block, dtype=dtype),
            torch.randn(n, block, 1, dtype=dtype),
            torch.randn(n, 1, block, dtype=dtype),
        )
        h.addcmul_(x, y, value=-1)
        reps, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            h.addcmul_(x, y, value=-1)
            reps += 1
        best = max(best, 2 * n * block * block * reps / (time.perf_counter() - began) / 1e9)
    return best


def eliminate_layer(weights: torch.Tensor, inverse: torch.Tensor, rows: int, run, workers: int = 1) -> float:
    """Seconds to eliminate every block in chunks of `rows`, `workers` chunks at a time as the Pruner runs
    them (`map_chunks`; copies of H made before the clock starts)."""
    slices = even_chunks(len(weights), rows, workers)
    scratch = {s.start: inverse[s].clone() for s in slices}
    began = time.perf_counter()
    map_chunks(lambda s: run(weights[s], scratch[s.start]), slices, workers)
    return time.perf_counter() - began


def elimination_child(config: dict) -> dict:
    """Old vs new elimination of one layer for each B, and the rank-1 ceiling, in this process."""
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    torch.manual_seed(0)
    dtype, (out_features, in_features) = dtype_of(config["dtype"]), config["layer"]
    results = []
    for block in config["block_sizes"]:
        n = out_features * in_features // block
        grads = torch.randn(n, block, 2 * block, dtype=torch.float64) * 1e-3
        fisher = grads @ grads.transpose(1, 2) / (2 * block) + config["damp"] * torch.eye(
            block, dtype=torch.float64
        )
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(fisher)).to(dtype).contiguous()
        weights = torch.randn(n, block, dtype=dtype) * 0.02
        new_rows = elimination_rows(block, dtype, torch.device("cpu"), default_panel(block))
        variants = {
            "old": (max(1, OLD_CHUNK_BYTES // (block * block * dtype.itemsize)), reference_greedy_eliminate),
            "new": (new_rows, greedy_eliminate),  # the compiled per-block loop, the CPU default
        }
        for label, panel in (
            ("eager (panel 1)", 1),
            ("batched panel (B/8)", default_panel(block)),  # the accelerator path
            ("lazy (panel B)", block),
        ):
            variants[label] = (
                elimination_rows(block, dtype, torch.device("cpu"), panel),
                lambda w, h, panel=panel: greedy_eliminate(w, h, panel=panel, compiled=False),
            )
        compile_kernels(block, dtype)
        threaded = f"new, {torch.get_num_threads()} chunks at once"
        if torch.get_num_threads() > 1:  # what Pruner.plan runs on this many threads (`pruning.threads`)
            variants[threaded] = variants["new"]
        times: dict[str, list[float]] = {k: [] for k in variants}
        ceiling = []
        for _ in range(config["repeats"]):
            ceiling.append(rank1_ceiling(block, dtype))
            for key, (rows, run) in variants.items():
                workers = torch.get_num_threads() if key == threaded else 1
                times[key].append(eliminate_layer(weights, inverse, rows, run, workers))
        flops = 2 * n * block**3
        row = {
            "B": block,
            "ceiling_gflops": statistics.median(ceiling),
            "new_rows": new_rows,
            "new_panel": default_panel(block),
            "library": threaded if threaded in variants else "new",  # the variant Pruner.plan runs
        }
        for key, values in times.items():
            row[key] = {"s": statistics.median(values), "gflops": flops / statistics.median(values) / 1e9}
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"rows": results, "threads": torch.get_num_threads()}


def elimination_mode(args: argparse.Namespace) -> tuple[str, list[dict]]:
    out_features, in_features = (int(v) for v in (args.layer or "384x384").lower().split("x"))
    config = {
        "elimination": True,
        "layer": [out_features, in_features],
        "block_sizes": args.block_size,
        "dtype": args.dtype,
        "damp": args.damp,
        "repeats": args.repeats,
    }
    res = run_child(config, args)
    keys = list(dict.fromkeys(k for r in res["rows"] for k in r if isinstance(r[k], dict)))
    lines = [
        "| B | rank-1 ceiling (GFLOP/s) | " + " | ".join(keys) + " | library vs old | library / ceiling |",
        "|---:|---:|" + "---:|" * (len(keys) + 2),
    ]
    for r in res["rows"]:
        cells = " | ".join(f"{r[k]['s']:.3f} s ({r[k]['gflops']:.1f})" for k in keys)
        lines.append(
            f"| {r['B']} | {r['ceiling_gflops']:.1f} | {cells} | {r['old']['s'] / r[r['library']]['s']:.2f}x "
            f"| {100 * r[r['library']]['gflops'] / r['ceiling_gflops']:.0f}% |"
        )
    text = "\n".join(
        lines
        + [
            "",
            f"{args.layer or '384x384'} layer, {args.dtype}; cells: median seconds (GFLOP/s at "
            f"2 d B^2); median of {args.repeats} repeats, variants alternating; new = panel "
            f"{', '.join(str(r['new_panel']) for r in res['rows'])} and chunks of "
            f"{', '.join(str(r['new_rows']) for r in res['rows'])} blocks",
        ]
    )
    return text, [{**r, "layer": args.layer or "384x384", "dtype": args.dtype} for r in res["rows"]]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    layer_defaults = bool(args.layer)
    default_blocks = (
        [64, 128, 192, 256] if args.elimination else [64] if layer_defaults else [16, 64, 192, 256]
    )
    args.block_size = args.block_size or default_blocks
    args.num_grads = args.num_grads or ([256] if layer_defaults else [64, 256, 1024])
    if args.child:
        config = json.loads(args.child)
        print(json.dumps(elimination_child(config) if config.get("elimination") else child(config)))
        return 0
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.elimination:
        text, rows = elimination_mode(args)
    elif args.layer:
        text, rows = layer_mode(args)
    else:
        rows = grid_rows(args)
        text = markdown(rows)
    print(
        f"\n{text}\n\nthreads: {args.threads or torch.get_num_threads()}, torch {torch.__version__}; times on random weights "
        f"and gradients, ovit method, {args.dtype} Fisher and elimination"
    )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "speed.jsonl", "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    results_file(args, text, rows)
    return 0


def results_file(args: argparse.Namespace, text: str, rows: Sequence[dict]) -> None:
    """benchmarks/results/pruner_<mode>.json: this run's tables (the page's current figures of that mode)."""
    if args.elimination:
        name, title = "pruner_elimination", "Pruner: elimination vs the in-cache rank-1 ceiling"
        last = rows[-1]
        headline = [
            results.headline(
                f"compiled elimination vs the old one, {last['layer']}, B={last['B']}, {args.dtype}",
                round(last["old"]["s"] / last[last["library"]]["s"], 2),
                "x",
                f"{args.threads or torch.get_num_threads()} thread(s); median of {args.repeats}",
            )
        ]
    elif args.layer:
        name, title = "pruner_layer", f"Pruner: Fisher + plan + apply of one {args.layer} layer"
        row = rows[0]
        headline = [
            results.headline(
                f"oViT pruner, {args.layer} layer, B={row['B']}, m={row['m']}, {args.dtype}: Fisher + plan + apply",
                round(row["total_s"], 3),
                "s",
                f"median of {args.repeats}; old path {row['total_s_old']:.3f} s in the same process",
            )
        ]
    else:
        name, title = "pruner_model", "Pruner: DeiT layer shapes, Fisher + plan + apply and peak RSS"
        measured = [r for r in rows if "plan_s" in r and r["m"] == rows[0]["m"]]
        headline = [
            results.headline(
                f"oViT plan, {r['model']}, B={r['B']}, {args.dtype}", round(r["plan_s"], 1), "s", r["note"]
            )
            for r in measured
        ] + [
            results.headline(
                f"peak RSS, {r['model']}, B={r['B']}, {args.dtype}",
                round(r["peak_rss_gib"], 2),
                "GiB",
                (r["rss_note"] + " " + r["note"]).strip(),
            )
            for r in measured
        ]
    notes = "\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("|"))
    results.write_results(
        name, title=title, headline=headline, tables=results.tables_from_markdown(text), notes=notes
    )


if __name__ == "__main__":
    sys.exit(main())
