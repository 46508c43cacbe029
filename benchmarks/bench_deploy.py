"""Dense vs pruned models as deployed (issue 26.6): ONNX Runtime on this CPU beside eager PyTorch and the
`torch.export` program, batch-1 latency and batch-64 throughput, median and p90.

Models, all from the trained digits preset (trained once through the normal preset cache):
- `dense`: the preset;
- `optin`: OPTIN-shrunk to `--flops-ratio` of the dense MACs (scores on 32 seeded training images,
  `search_flops`, `shrink`): fewer heads and MLP neurons, so smaller GEMMs;
- `optin+tome`: the same budget with `--token-share` of the saving taken by ToMe token merging;
- `depth`: BoundaryDPT's edits (cosine scores, `--drop-attention` attention sublayers dropped and
  `--linearise` MLPs linearised and merged into one d x d Linear). Speed does not depend on the weights, so
  these models are not fine-tuned; their top-1 is reported only to show each file computes what PyTorch does.

Every model is written by `ovit_ray.models.formats` (the writers `ovit-ray export` uses) as ONNX and `.pt2`,
and read back by its runtime (`load_runtime_model`: ONNX Runtime CPU session with `--threads` intra-op
threads, `torch.export.load`). For each batch size, ALL (model, runtime) pairs are timed in ONE interleaved
loop (`ovit_ray.measure.speed.compare_models`: every round times each pair once in a rotating order), so
ratios are measured under the same machine noise. Speed-ups are against the dense model in the same runtime.

2:4 semi-structured sparsity (`torch.sparse.to_sparse_semi_structured`) needs an NVIDIA GPU (sm80+), so it is
not measured here; `benchmarks/gpu_check.py` covers it when a GPU is lent.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deploy.py            # as run for BENCHMARKS.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_deploy.py --model digits32-vit
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
from importlib import metadata
from pathlib import Path

import results_file as results
import torch
from torch import nn

from ovit_ray.measure.speed import compare_models
from ovit_ray.models.formats import load_runtime_model, write_format
from ovit_ray.pruning.depth import (
    DepthCosts,
    anneal_activation,
    depth_scores,
    drop_attention,
    merge_mlp,
    select,
)
from ovit_ray.pruning.structured import VitCosts, merge_tokens, optin_scores, search_flops, shrink
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.preset import load_preset_model, preset_dataset

RUNTIMES = ("pytorch", "onnxruntime", "torch.export")


def _variants(model_name: str, args: argparse.Namespace) -> tuple[dict[str, nn.Module], object]:
    """The dense preset and its pruned variants (see the module docstring), and the preset's data."""
    dense = load_preset_model(model_name, progress=False).eval()
    data = preset_dataset(model_name)
    generator = torch.Generator().manual_seed(0)
    calib = torch.stack(
        [data.train[int(i)][0] for i in torch.randperm(len(data.train), generator=generator)[:32]]
    )
    scores = optin_scores(dense, calib)
    costs = VitCosts.of(dense)
    models: dict[str, nn.Module] = {"dense": dense}
    found = search_flops(scores.heads, scores.neurons, costs, args.flops_ratio)
    models["optin"] = shrink(dense, found.masks).eval()
    merged = search_flops(scores.heads, scores.neurons, costs, args.flops_ratio, token_share=args.token_share)
    if merged.widths.merged and any(merged.widths.merged):
        models["optin+tome"] = merge_tokens(shrink(dense, merged.masks), merged.widths.merged).eval()
    plan = select(depth_scores(dense, calib), "cosine", args.drop_attention, args.linearise)
    depth = copy.deepcopy(dense)
    for block in plan.drop_attention:
        drop_attention(depth.blocks[block])
    for block in plan.linearise:
        anneal_activation(depth.blocks[block], 0.0)
        merge_mlp(depth.blocks[block])
    models["depth"] = depth.eval()
    return models, data


def _macs(model: nn.Module) -> int:
    return DepthCosts.of(model).macs()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="digits-vit", help="a preset (default: digits-vit)")
    parser.add_argument("--flops-ratio", type=float, default=0.5)
    parser.add_argument("--token-share", type=float, default=0.85)
    parser.add_argument("--drop-attention", type=int, default=1)
    parser.add_argument("--linearise", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--throughput-batch", type=int, default=64)
    parser.add_argument("--throughput-runs", type=int, default=60)
    args = parser.parse_args()

    models, data = _variants(args.model, args)
    test = torch.stack([data.test[i][0] for i in range(len(data.test))])
    labels = torch.tensor([data.test[i][1] for i in range(len(data.test))])
    example = test[:8]
    pairs: dict[str, nn.Module] = {}
    agreement = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        for name, model in models.items():
            files = {fmt: Path(tmp) / f"{name.replace('+', '_')}.{fmt}" for fmt in ("onnx", "pt2")}
            for fmt, path in files.items():
                write_format(fmt, model, example, path)
            runtimes = {
                "pytorch": model,
                "onnxruntime": load_runtime_model(files["onnx"], threads=args.threads),
                "torch.export": load_runtime_model(files["pt2"]),
            }
            with torch.inference_mode():
                reference = model(test)
                for runtime, module in runtimes.items():
                    logits = module(test)
                    loader = make_loader(data.test, 256, shuffle=False, seed=0)
                    top1 = evaluate(module, loader, device="cpu")["top1"]
                    agreement.append(
                        [
                            name,
                            runtime,
                            round(float((logits - reference).abs().max()), 8),
                            round(top1, 4),
                            bool((logits.argmax(-1) == labels).float().mean() == top1),
                        ]
                    )
                    pairs[f"{name} / {runtime}"] = module
        timings = {}
        for batch, warmup, runs in (
            (1, 20, args.latency_runs),
            (args.throughput_batch, 5, args.throughput_runs),
        ):
            print(f"timing {len(pairs)} (model, runtime) pairs interleaved at batch {batch} ({runs} runs)")
            timings[batch] = compare_models(
                pairs, batch_size=batch, example=test[0], warmup=warmup, runs=runs, threads=args.threads
            )
    dense_macs, shape = _macs(models["dense"]), VitCosts.of(models["dense"])
    rows = []
    for name, model in models.items():
        for runtime in RUNTIMES:
            key = f"{name} / {runtime}"
            b1, bn = timings[1].stats[key], timings[args.throughput_batch].stats[key]
            base1 = timings[1].stats[f"dense / {runtime}"]
            basen = timings[args.throughput_batch].stats[f"dense / {runtime}"]
            rows.append(
                [
                    name,
                    runtime,
                    round(_macs(model) / dense_macs, 3),
                    round(b1.median_s * 1e3, 3),
                    round(b1.p90_s * 1e3, 3),
                    round(base1.median_s / b1.median_s, 2),
                    round(bn.median_s * 1e3, 2),
                    round(bn.p90_s * 1e3, 2),
                    round(bn.images_per_s),
                    round(basen.median_s / bn.median_s, 2),
                ]
            )
            print(" | ".join(str(c) for c in rows[-1]))
    versions = {p: metadata.version(p) for p in ("torch", "timm", "onnxruntime", "onnx", "onnxscript")}
    by = {(r[0], r[1]): r for r in rows}
    best = max((r for r in rows if r[0] != "dense"), key=lambda r: r[5])
    tome_slower = ("optin+tome", "onnxruntime") in by and all(
        by[("optin+tome", runtime)][5] < 1 for runtime in RUNTIMES
    )
    tome_note = (
        "ToMe's matching (a sort, gathers and scatters in every merging block) costs more than the MACs it saves "
        f"on {shape.widths.tokens[0]} tokens at batch 1, in every runtime: merging pays where tokens are many. "
        if tome_slower
        else ""
    )
    results.write_results(
        "deploy",
        title=f"Dense vs pruned {args.model} as deployed: ONNX Runtime, torch.export and eager PyTorch on the CPU",
        headline=[
            results.headline(
                f"{name} vs dense, batch-1 latency, ONNX Runtime ({args.threads} thread)",
                by[(name, "onnxruntime")][5],
                "x",
                f"MACs {by[(name, 'onnxruntime')][2]:.2f} of dense; eager PyTorch {by[(name, 'pytorch')][5]:.2f}x",
            )
            for name in models
            if name != "dense"
        ]
        + [
            results.headline(
                "ONNX Runtime vs eager PyTorch, dense model, batch-1 latency",
                round(by[("dense", "pytorch")][3] / by[("dense", "onnxruntime")][3], 2),
                "x",
                "the runtime alone, before any pruning",
            )
        ],
        tables=[
            results.table(
                f"{args.model}: every (model, runtime) pair in one interleaved loop per batch size; {args.threads} "
                f"thread(s); speed-up against the dense model in the same runtime",
                [
                    "model",
                    "runtime",
                    "MACs vs dense",
                    "b1 median ms",
                    "b1 p90 ms",
                    "b1 speed-up",
                    f"b{args.throughput_batch} median ms",
                    f"b{args.throughput_batch} p90 ms",
                    "images/s",
                    f"b{args.throughput_batch} speed-up",
                ],
                rows,
            ),
            results.table(
                "each file computes what PyTorch computes: max |logit difference| over the whole test split and "
                "its test top-1 (evaluated through the runtime)",
                ["model", "runtime", "max abs diff", "test top-1", "argmax agrees"],
                agreement,
            ),
        ],
        notes=(
            f"Runtimes: {', '.join(f'{k} {v}' for k, v in versions.items())}. Models: the trained `{args.model}` "
            f"preset; `optin` shrunk to {args.flops_ratio} of its MACs (OPTIN scores), `optin+tome` the same budget "
            f"with {args.token_share} of the saving from ToMe token merging, `depth` with {args.drop_attention} "
            f"attention sublayer(s) dropped and {args.linearise} MLP(s) merged (cosine scores; not fine-tuned: "
            "speed does not depend on the weights). Each model was written as ONNX (opset 18, dynamo exporter) and "
            "as a torch.export program by `ovit_ray.models.formats` and read back by its runtime. Timing: "
            "`measure.speed.compare_models`, all pairs interleaved per batch size, medians and p90 per batch. "
            f"The best pruned speed-up here: {best[0]} in {best[1]}, {best[5]}x at batch 1. On a model this small "
            f"({shape.widths.tokens[0]} tokens, width {shape.embed_dim}) per-call overhead is a large share of "
            "batch-1 latency, which is where ONNX "
            "Runtime's lower dispatch cost shows; batch-64 throughput is closer to the MAC ratio. "
            + tome_note
            + "2:4 "
            "semi-structured sparsity needs a GPU (`torch.sparse.to_sparse_semi_structured`, sm80+): not measured "
            "on this CPU; see benchmarks/gpu_check.py."
        ),
        threads=args.threads,
        omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        versions=versions,
    )


if __name__ == "__main__":
    main()
