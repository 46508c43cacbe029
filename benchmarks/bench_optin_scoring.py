"""OPTIN scoring speed (issue 15, "Targets"): the bundled preset scored end to end, and the cost per candidate
of a DeiT-Small-shaped model, each with one candidate per pass next to K candidates per pass.

Preset: the trained `digits-vit` (trained and cached on first use), a calibration batch of 32 training images
drawn with `--seed`; every head and neuron is scored once per K in `--candidates` (wall time, median of
`--repeats`), and each K's scores are compared with K=1's (largest relative difference).

DeiT-Small: an untrained timm `deit_small_patch16_224` (timing depends only on shapes), 32 random images. A
full score would take hours on a CPU, so `TrajectoryLosses.losses` is timed on one chunk of neurons in each
of the last `--deit-blocks` blocks (a candidate in block l runs blocks l..11, so the cost per candidate grows
by one block per block earlier); the total is extrapolated from the per-block cost, and labelled so.

    .venv/bin/python benchmarks/bench_optin_scoring.py
    .venv/bin/python benchmarks/bench_optin_scoring.py --skip-deit --candidates 1 32
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import timm
import torch

from ovit_ray.pruning.structured import OptinSettings, TrajectoryLosses, optin_scores
from ovit_ray.training.preset import load_preset_model, preset_dataset


def _calibration(size: int, seed: int) -> torch.Tensor:
    train = preset_dataset("digits-vit").train
    picks = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size]  # type: ignore[arg-type]
    return torch.stack([train[int(i)][0] for i in picks])


def bench_preset(candidates: list[int], repeats: int, seed: int) -> list[dict]:
    model = load_preset_model("digits-vit", progress=False)
    images = _calibration(32, seed)
    rows, reference = [], None
    for k in candidates:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            scores = optin_scores(model, images, OptinSettings(candidates_per_pass=k, seed=seed))
            times.append(time.perf_counter() - start)
        flat = torch.cat([*scores.heads, *scores.neurons])
        reference = flat if reference is None else reference
        diff = float(((flat - reference).abs() / reference.abs().clamp(min=1e-12)).max())
        rows.append(
            {
                "model": "digits-vit",
                "K": k,
                "seconds": statistics.median(times),
                "units": len(flat),
                "max_rel_diff_vs_first": diff,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


@torch.no_grad()
def bench_deit(candidates: list[int], blocks: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = timm.create_model("deit_small_patch16_224", pretrained=False).eval()
    images = torch.randn(32, 3, 224, 224)
    start = time.perf_counter()
    losses = TrajectoryLosses(model, images, OptinSettings())
    teacher_s = time.perf_counter() - start
    depth, width = len(model.blocks), model.blocks[0].mlp.fc1.out_features
    rows = []
    for k in candidates:
        per_block = []
        for layer in range(depth - blocks, depth):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                losses.losses(layer, "neurons", torch.arange(k), width)
                times.append(time.perf_counter() - start)
            per_candidate = statistics.median(times) / k
            per_block.append(per_candidate / (depth - layer))
            rows.append(
                {"model": "deit_small (random)", "K": k, "block": layer, "s_per_candidate": per_candidate}
            )
            print(json.dumps(rows[-1]), flush=True)
        units = 6 + width  # heads and neurons per block
        total = statistics.mean(per_block) * units * sum(depth - layer for layer in range(depth))
        rows.append(
            {
                "model": "deit_small (random)",
                "K": k,
                "teacher_s": teacher_s,
                "s_per_candidate_block": statistics.mean(per_block),
                "extrapolated_total_s": total,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=57)
    parser.add_argument("--deit-candidates", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--deit-blocks", type=int, default=2)
    parser.add_argument("--skip-deit", action="store_true")
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "timm": timm.__version__,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )
    bench_preset(args.candidates, args.repeats, args.seed)
    if not args.skip_deit:
        bench_deit(args.deit_candidates, args.deit_blocks, 1)


if __name__ == "__main__":
    main()
