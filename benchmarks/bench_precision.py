"""Float32 vs float64 oViT masks on real gradients (issue 14, "precision by evidence").

Gradients of the mean cross-entropy over batches of 16 digits images are collected once per model (m of them,
kept in float64); for each lambda and B the same gradients build the Fisher sums, and three precisions are
planned and applied through the library's Pruner:

- float64: float64 sums, inverse and elimination (the reference);
- f32 elim: float64 sums and inverse, float32 elimination (the inverse is cast after the factorisation);
- f32 all: float32 sums, inverse and elimination.

Agreement = share of weights whose mask bit equals the float64 mask's, at global sparsities 0.5, 0.75, 0.9.
Models: the bundled digits-vit preset (all prunable weights), and a DeiT-Small-shaped layer (attn.proj, 384x384)
of a one-block ViT of DeiT-Small width briefly trained on the same digits data (nothing is downloaded).

    .venv/bin/python benchmarks/bench_precision.py            # about 10-20 minutes on 2 loaded cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence

import results_file as results
import torch
from torch import nn

from ovit_ray.models import create_model
from ovit_ray.pruning import MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning.gradients import FisherSums
from ovit_ray.training.loop import make_loader
from ovit_ray.training.setup import build_model_and_data

VARIANTS = {
    "float64": (torch.float64, "float64"),
    "f32 elim": (torch.float64, "float32"),
    "f32 all": (torch.float32, "float32"),
}


def deit_shaped(train_set, steps: int, seed: int = 0) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """One-block ViT with DeiT-Small width (384, 6 heads, MLP 1536) trained `steps` AdamW steps on digits."""
    torch.manual_seed(seed)
    model = create_model("digits-vit", embed_dim=384, num_heads=6, depth=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    loader, done = make_loader(train_set, 64, shuffle=True, seed=seed), 0
    model.train()
    while done < steps:
        for images, labels in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return model, select_prunable(model, [r"blocks\.0\.attn\.proj\.weight"])


def gradients(
    model: nn.Module, params: Mapping[str, nn.Parameter], train_set, m: int
) -> dict[str, torch.Tensor]:
    """m mean-loss gradients over batches of 16, eval mode, float64 rows."""
    model.eval()
    loader = make_loader(train_set, 16, shuffle=True, seed=0)
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in params}
    while len(next(iter(rows.values()))) < m:
        for images, labels in loader:
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(images), labels).backward()
            for name, p in params.items():
                rows[name].append(p.grad.detach().reshape(-1).double())
            if len(rows[name]) == m:
                break
    model.zero_grad(set_to_none=True)
    return {n: torch.stack(r) for n, r in rows.items()}


def masks_for(
    model, params, grads, block: int, damp: float, sums_dtype, dtype: str, sparsities
) -> list[MaskSet]:
    sums = FisherSums(
        {n: g.shape[1] for n, g in grads.items()},
        block,
        len(next(iter(grads.values()))),
        torch.device("cpu"),
        sums_dtype,
    )
    for k in range(len(next(iter(grads.values())))):
        sums.add({n: g[k].to(sums_dtype) for n, g in grads.items()})
    sums.flush()
    settings = PruneSettings(method="ovit", block_size=block, num_grads=sums.count, damp=damp, dtype=dtype)
    pruner = Pruner(model, params, MaskSet.dense(params), settings, apply_cache_bytes=0)
    pruner.fisher = sums
    pruner.plan()
    out = [pruner.apply(s) for s in sparsities]
    pruner.restore()
    return out


def agreement(a: MaskSet, b: MaskSet) -> float:
    same = sum(int((a[n] == b[n]).sum()) for n in a)
    return same / sum(a[n].numel() for n in a)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-grads", "-m", type=int, default=128)
    p.add_argument("--damp", nargs="+", type=float, default=[1e-8, 1e-7, 1e-6])
    p.add_argument("--block-size", "-B", nargs="+", type=int, default=[64, 192])
    p.add_argument("--sparsity", nargs="+", type=float, default=[0.5, 0.75, 0.9])
    p.add_argument(
        "--deit-steps", type=int, default=60, help="AdamW steps for the DeiT-shaped model (default: 60)"
    )
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = build_model_and_data("digits-vit", progress=False)
    models = {
        "digits-vit preset (all prunable)": (start.model, select_prunable(start.model)),
        "DeiT-Small-shaped attn.proj 384x384": deit_shaped(start.data.train, args.deit_steps),
    }
    lines = [
        "| model | lambda | B | "
        + " | ".join(f"{v} agreement at s={s:g}" for v in list(VARIANTS)[1:] for s in args.sparsity)
        + " |",
        "|---|---:|---:|" + "---:|" * (2 * len(args.sparsity)),
    ]
    for label, (model, params) in models.items():
        grads = gradients(model, params, start.data.train, args.num_grads)
        for damp in args.damp:
            for block in args.block_size:
                began = time.perf_counter()
                masks = {
                    v: masks_for(model, params, grads, block, damp, sd, dt, args.sparsity)
                    for v, (sd, dt) in VARIANTS.items()
                }
                cells = [
                    100 * agreement(masks[v][i], masks["float64"][i])
                    for v in list(VARIANTS)[1:]
                    for i in range(len(args.sparsity))
                ]
                lines.append(
                    f"| {label} | {damp:g} | {block} | " + " | ".join(f"{c:.3f}%" for c in cells) + " |"
                )
                print(
                    json.dumps(
                        {
                            "model": label,
                            "damp": damp,
                            "B": block,
                            "agreement_pct": cells,
                            "seconds": round(time.perf_counter() - began, 1),
                        }
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    print("\n".join(lines))
    setting = f"m = {args.num_grads} gradients of batch 16; threads {torch.get_num_threads()}"
    print(f"\n{setting}; torch {torch.__version__}")
    lowest = min(
        float(c.rstrip("%")) for line in lines[2:] for c in line.split(" | ")[3 : 3 + len(args.sparsity)]
    )
    results.write_results(
        "precision",
        title="Pruner precision: float32 vs float64 masks",
        headline=[
            results.headline(
                f"mask agreement with all-float64, {list(VARIANTS)[1]}, lowest cell", lowest, "%", setting
            )
        ],
        tables=results.tables_from_markdown(
            "\n".join(lines), "Agreement of the mask bits with the all-float64 masks"
        ),
        notes=f"Variants: {', '.join(VARIANTS)}; every cell compares a variant's masks with the all-float64 masks.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
