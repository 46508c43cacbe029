"""Measured speed of structured (OPTIN) pruning (issue 15, Deliver 6 and "Targets"): the dense, the masked
(hooks zero the pruned heads / neurons) and the physically shrunk model, timed side by side.

Masks: heads and MLP neurons scored once, then `search_flops` at each FLOPs (MAC) ratio of `--ratios`.
- `digits-vit`: the bundled preset (trained and cached on first use), OPTIN scores (`optin_scores`) on 32
  training images drawn with `--seed` (as bench_optin_scoring.py). Also the test-split top-1 of the dense,
  masked and shrunk model at every ratio (CPU, fp32), and whether masked and shrunk agree.
- `deit-small`: timm `deit_small_patch16_224` with RANDOM weights (nothing is downloaded) and masks from
  seeded RANDOM scores, a head's scaled by its MACs over a neuron's (so heads and neurons are cut in about
  equal MAC shares): speed only, its accuracy means nothing. It shows the speed-up of
  real ViT widths (384 wide, 6 heads, 1536 neurons, 197 tokens) that the tiny preset cannot.

Timing (`ovit_ray.measure.speed.compare_models`): for each dtype and batch size, ALL variants of a model
(dense, masked and shrunk at every ratio) run in ONE interleaved loop, each round timing every variant once
in a rotating order, so the speed-ups are ratios measured in one run under the same machine noise. Batch 1
is latency (`--warmup` then `--latency-runs`), `--batch-sizes` are throughput (`--throughput-warmup` then
`--throughput-runs`); median and p90 per batch, images/s from the median; torch, timm, threads and dtype are
recorded. bf16 is a model cast. The masked models' hooks move their mask to the device on every call (a
small copy that counts on CUDA): the masked model is a reference, the shrunk one is what is deployed.

With `--device cuda` the default dtypes are fp32 and bf16, and each shrunk model's block Linears are also
pruned 2:4 (magnitude, 2 of every 4 inputs) and converted with `torch.sparse.to_sparse_semi_structured`
where the shapes allow (layers it refuses stay dense and are listed); on CPU 2:4 is reported as not
applicable. `--models deit-small` imports torch, timm and ovit_ray's pruning and measure layers only (no
Ray, MLflow or Optuna; the JSON records that); the preset also needs the data stack (scikit-learn digits).

    # CPU, as run for BENCHMARKS.md (2 shared cores: one thread is the steadier clock; a DeiT-S batch of 64
    # takes ~10 s on one core, hence no masked models and fewer throughput runs there)
    .venv/bin/python benchmarks/bench_structured_speed.py --models digits-vit --threads 1
    .venv/bin/python benchmarks/bench_structured_speed.py --models deit-small --threads 1 --skip-masked \\
        --warmup 10 --batch-sizes 64 --throughput-warmup 1 --throughput-runs 5
    # GPU: fp32 + bf16 + 2:4, full settings (>= 200 latency runs), both models
    .venv/bin/python benchmarks/bench_structured_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from pathlib import Path

import results_file as results_io
import timm
import torch
from torch import nn

from ovit_ray.measure.speed import compare_models
from ovit_ray.pruning.structured import OptinSettings, VitCosts, masked, optin_scores, search_flops, shrink

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _preset(seed: int) -> tuple[nn.Module, tuple, tuple, str]:
    """The trained preset and its OPTIN scores on a calibration batch (the data stack is imported only here)."""
    from bench_optin_scoring import _calibration

    from ovit_ray.training.preset import load_preset_model

    model = load_preset_model("digits-vit", progress=False)
    scores = optin_scores(model, _calibration(32, seed), OptinSettings(seed=seed))
    return model, scores.heads, scores.neurons, "optin (trained preset)"


def _deit_small(seed: int) -> tuple[nn.Module, tuple, tuple, str]:
    """Random weights and seeded random scores, a head's scaled by its MACs over a neuron's: per MAC both
    kinds then score alike, so the search cuts heads and neurons in about equal shares, as a real mask
    would (magnitude scores of random weights are near-uniform and made it drop every head first)."""
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False)
    costs, generator = VitCosts.of(model), torch.Generator().manual_seed(seed)
    tokens = costs.widths.tokens[0]
    scale = costs.head_macs(tokens) / costs.neuron_macs(tokens)
    heads = tuple(scale * torch.rand(h, generator=generator) for h in costs.widths.heads)
    neurons = tuple(torch.rand(n, generator=generator) for n in costs.widths.neurons)
    return model, heads, neurons, "random, per-MAC balanced (random weights: speed only)"


def _two_four(model: nn.Module) -> tuple[nn.Module, int, list[str]]:
    """A copy whose block Linears keep the 2 largest of every 4 input weights as semi-structured sparse
    tensors; returns it, the number converted, and why the others were left dense."""
    from torch.sparse import to_sparse_semi_structured

    out, converted, refused = copy.deepcopy(model), 0, []
    for name, module in out.get_submodule("blocks").named_modules():
        if not isinstance(module, nn.Linear):
            continue
        try:
            weight = module.weight.detach()
            groups = weight.reshape(-1, 4)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(
                1, groups.abs().topk(2, 1).indices, True
            )
            sparse = to_sparse_semi_structured(weight * keep.reshape(weight.shape))
            module.weight = nn.Parameter(sparse, requires_grad=False)
            converted += 1
        except (RuntimeError, ValueError, TypeError) as error:
            refused.append(f"{name}: {str(error).splitlines()[0][:120]}")
    return out, converted, refused


@torch.inference_mode()
def _fails(model: nn.Module, image_size: int) -> str | None:
    """Why a forward pass of the 2:4 model fails (then it is not timed), or None when it runs."""
    param = next(model.parameters())
    try:
        model(torch.randn(2, 3, image_size, image_size, device=param.device, dtype=param.dtype))
    except (RuntimeError, ValueError, TypeError) as error:
        return str(error).splitlines()[0][:200]
    return None


@torch.no_grad()
def _top1(model: nn.Module, loader: list) -> tuple[float, torch.Tensor]:
    model.eval()
    logits = torch.cat([model(x) for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    return float((logits.argmax(-1) == labels).float().mean()), logits


def accuracy(dense: nn.Module, variants: dict[str, nn.Module]) -> list[dict]:
    """Test-split top-1 of every variant (CPU, fp32), and masked vs shrunk logits at each ratio."""
    from ovit_ray.training.loop import make_loader
    from ovit_ray.training.preset import preset_dataset

    loader = list(make_loader(preset_dataset("digits-vit").test, 256, shuffle=False, seed=0))
    top1_dense, _ = _top1(dense, loader)
    rows, logits = [], {}
    for name, model in variants.items():
        top1, logits[name] = _top1(model, loader)
        rows.append(
            {
                "variant": name,
                "top1": top1,
                "top1_dense": top1_dense,
                "delta_points": 100 * (top1 - top1_dense),
            }
        )
        kind, _, ratio = name.partition("@")
        if kind == "shrunk" and f"masked@{ratio}" in logits:
            gap = (logits[name] - logits[f"masked@{ratio}"]).abs().max()
            same = bool((logits[name].argmax(-1) == logits[f"masked@{ratio}"].argmax(-1)).all())
            rows[-1].update({"max_abs_logit_diff_vs_masked": float(gap), "same_predictions_as_masked": same})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _timings(
    name: str, variants: dict[str, nn.Module], searches: dict, costs: VitCosts, args: argparse.Namespace
) -> tuple[list[dict], dict]:
    """Every variant (plus, on CUDA, each shrunk model pruned 2:4) in one interleaved loop per dtype and
    batch size; rows with the speed-up over the dense model, and what 2:4 converted per dtype and ratio."""
    image_size = variants["dense"].patch_embed.img_size[0]
    rows, two_four = [], {}
    for dtype_name in args.dtypes:
        timed = dict(variants)
        for ratio in args.ratios if args.device == "cuda" else []:
            cast = copy.deepcopy(variants[f"shrunk@{ratio}"]).to("cuda", DTYPES[dtype_name])
            sparse, converted, refused = _two_four(cast)
            failed = _fails(sparse, image_size) if converted else "no layer converted"
            two_four[f"{dtype_name}@{ratio}"] = {"converted": converted, "refused": refused, "failed": failed}
            if failed is None:
                timed[f"shrunk+2:4@{ratio}"] = sparse
        for batch in [1, *args.batch_sizes]:
            latency = batch == 1
            comparison = compare_models(
                timed,
                batch_size=batch,
                image_size=image_size,
                device=args.device,
                dtype=DTYPES[dtype_name],
                warmup=args.warmup if latency else args.throughput_warmup,
                runs=args.latency_runs if latency else args.throughput_runs,
                threads=args.threads,
            )
            for variant, stats in comparison.stats.items():
                kind, _, ratio = variant.partition("@")
                found = searches.get(float(ratio)) if ratio else None
                rows.append(
                    {
                        "model": name,
                        "variant": kind,
                        "flops_ratio": float(ratio or 1.0),
                        "achieved_ratio": found.achieved_ratio if found else 1.0,
                        "gmacs": (found.achieved_macs if found else costs.macs()) / 1e9,
                        "params_m": _params(variants[variant.replace("+2:4", "")]) / 1e6,
                        "speedup_vs_dense": comparison.speedups[variant],
                        **stats.row(),
                    }
                )
                print(_line(rows[-1]), flush=True)
    return rows, two_four


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(name: str, args: argparse.Namespace) -> dict:
    """Score, search every ratio, build the masked and shrunk variants, then accuracy (preset) and timings."""
    began = time.perf_counter()
    model, heads, neurons, scores = _preset(args.seed) if name == "digits-vit" else _deit_small(args.seed)
    score_s = time.perf_counter() - began
    model.eval()
    costs = VitCosts.of(model)
    variants: dict[str, nn.Module] = {"dense": model}
    searches = {}
    with contextlib.ExitStack() as stack:
        for ratio in args.ratios:
            searches[ratio] = search_flops(heads, neurons, costs, ratio)
            if not args.skip_masked:
                copied = copy.deepcopy(model)
                variants[f"masked@{ratio}"] = stack.enter_context(masked(copied, searches[ratio].masks))
            variants[f"shrunk@{ratio}"] = shrink(model, searches[ratio].masks)
        accuracy_rows = accuracy(model, variants) if name == "digits-vit" else []
        rows, two_four = _timings(name, variants, searches, costs, args)
    return {
        "model": name,
        "scores": scores,
        "load_and_score_seconds": score_s,
        "widths": {r: {"heads": f.widths.heads, "neurons": f.widths.neurons} for r, f in searches.items()},
        "two_four": two_four if args.device == "cuda" else "not applicable on CPU",
        "accuracy": accuracy_rows,
        "timings": rows,
    }


def _line(row: dict) -> str:
    return (
        f"{row['model']:>10} {row['variant']:>10} {row['flops_ratio']:>4.2f} {row['achieved_ratio']:>5.3f} "
        f"{row['dtype']:>8} b={row['batch_size']:<4} median {1e3 * row['median_s']:9.2f} ms  "
        f"p90 {1e3 * row['p90_s']:9.2f} ms  {row['images_per_s']:9.1f} img/s  x{row['speedup_vs_dense']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", choices=["digits-vit", "deit-small"], default=["digits-vit", "deit-small"]
    )
    parser.add_argument(
        "--ratios", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.6, 0.5], help="FLOPs (MAC) ratios"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtypes", nargs="+", choices=list(DTYPES), help="default: fp32 on CPU, fp32 bf16 on CUDA"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], help="throughput batches")
    parser.add_argument("--warmup", type=int, default=50, help="latency warm-up rounds")
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--throughput-warmup", type=int, default=5)
    parser.add_argument("--throughput-runs", type=int, default=50)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--skip-masked", action="store_true", help="do not time the masked models (big models)"
    )
    parser.add_argument("--seed", type=int, default=57, help="calibration images and Gram subsets")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench_structured_speed"), help="folder for the JSON file"
    )
    args = parser.parse_args()
    args.dtypes = args.dtypes or (["fp32", "bf16"] if args.device == "cuda" else ["fp32"])
    results = [run(name, args) for name in args.models]
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"ray", "mlflow", "optuna"})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"structured_speed_{'_'.join(args.models)}_{args.device}.json"
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.write_text(json.dumps({"settings": settings, "heavy_imports": heavy, "results": results}, indent=1))
    print(f"heavy imports (ray/mlflow/optuna): {heavy or 'none'}; wrote {path}")
    for result in results:
        results_file(result, args, heavy)


COLUMNS = {
    "variant": "variant",
    "flops_ratio": "FLOPs ratio",
    "achieved_ratio": "achieved",
    "params_m": "params (M)",
    "dtype": "dtype",
    "batch_size": "batch",
    "median_s": "median (s)",
    "p90_s": "p90 (s)",
    "images_per_s": "images/s",
    "speedup_vs_dense": "speed-up",
}


def results_file(result: dict, args: argparse.Namespace, heavy: list[str]) -> None:
    """benchmarks/results/structured_speed_<model>.json from one model's rows."""
    shrunk = [r for r in result["timings"] if r["variant"] == "shrunk" and r["dtype"] == args.dtypes[0]]
    digits = result["model"] == "digits-vit"
    ratio = (
        min((r["flops_ratio"] for r in shrunk), key=lambda f: abs(f - 0.7)) if digits else min(args.ratios)
    )
    batch = max(r["batch_size"] for r in shrunk) if digits else 1
    best = [r for r in shrunk if r["flops_ratio"] == ratio and r["batch_size"] == batch]
    results_io.write_results(
        f"structured_speed_{result['model'].split('-')[0]}" + ("" if digits else "_small"),
        title=f"Structured pruning, measured speed: {result['model']} dense vs masked vs shrunk",
        headline=[
            results_io.headline(
                f"shrunk {result['model']} at FLOPs ratio {ratio}: batch-{batch} speed-up over dense",
                round(r["speedup_vs_dense"], 2),
                "x",
                f"{r['dtype']}, {r['threads']} thread(s), {r['device']}; masks: {result['scores']}",
            )
            for r in best
        ],
        tables=[
            results_io.table(
                "every variant timed in one interleaved loop per dtype and batch size",
                list(COLUMNS.values()),
                [[row[k] for k in COLUMNS] for row in result["timings"]],
            ),
            *(
                [results_io.table_of_dicts("test-split top-1", result["accuracy"])]
                if result["accuracy"]
                else []
            ),
        ],
        notes=f"Masks: {result['scores']}. Kept widths per ratio: {json.dumps(result['widths'])}. "
        f"2:4: {result['two_four']}. Heavy imports (ray/mlflow/optuna): {heavy or 'none'}.",
    )


if __name__ == "__main__":
    main()
