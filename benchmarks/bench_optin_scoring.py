"""OPTIN scoring speed (issues 15 and 25): the fast path (`TrajectoryLosses.losses`, which starts after the
candidate's block from the teacher's internals) against the masked pass it replaces (`masked_losses`, which
masks the unit and runs its block again), in one interleaved run, with the scores of both compared.

Preset: the trained `digits-vit` (trained and cached on first use), 32 training images drawn with `--seed`:
every head and neuron scored by both paths, chunk by chunk, the two alternating `--repeats` times on each
chunk (summed medians of wall and of CPU time), and the largest difference of their MD and KD terms relative
to the largest term; plus `optin_scores` end to end (median of `--repeats`).

DeiT (`--deit`, default `deit_tiny_patch16_224`): random weights (`pretrained=False`: nothing is downloaded;
time depends only on shapes), `--deit-images` random 224x224 images on `--device`. Per block, one chunk of
`--chunk` neurons and one of all its heads timed on both paths, interleaved (median of `--deit-repeats`):
seconds per candidate, and the analytic MACs per candidate (the blocks it runs at the calibration batch).
The whole-model time of either path is extrapolated from these per-block costs (labelled so); with
`--deit-full` the fast path also scores the whole model through `optin_scores`. The last table turns the
whole model's MACs into an H100 estimate at `--gpu-tflops` sustained: an estimate, not a measurement.

    # CPU (benchmarks/results/optin_scoring.json; one thread is the steadier clock on 2 shared cores)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_optin_scoring.py --repeats 3 --deit-images 32 \
        --chunk 8 --deit-repeats 3
    .venv/bin/python benchmarks/bench_optin_scoring.py --skip-deit          # preset only (~1 min)
    # GPU: DeiT-Small per block and whole (benchmarks/results/optin_scoring_gpu.json)
    .venv/bin/python benchmarks/bench_optin_scoring.py --deit deit_small_patch16_224 --device cuda \
        --chunk 32 --deit-full
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import results_file as results
import timm
import torch

from ovit_ray.pruning.structured import OptinSettings, TrajectoryLosses, UnitMasks, VitCosts, optin_scores
from ovit_ray.training.preset import load_preset_model, preset_dataset

Losses = Callable[[int, str, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
PATHS = ("masked pass (old)", "fast path (new)")


def _calibration(size: int, seed: int) -> torch.Tensor:
    train = preset_dataset("digits-vit").train
    picks = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size]  # type: ignore[arg-type]
    return torch.stack([train[int(i)][0] for i in picks])


def _paths(teacher: TrajectoryLosses) -> dict[str, Losses]:
    return dict(zip(PATHS, (teacher.masked_losses, teacher.losses), strict=True))


def _interleaved(
    teacher: TrajectoryLosses,
    layer: int,
    kind: str,
    units: torch.Tensor,
    width: int,
    repeats: int,
    turn: int,
    sync: Callable[[], None] = lambda: None,
) -> tuple[dict[str, tuple[float, float]], dict[str, torch.Tensor]]:
    """Both paths on one chunk, alternating (`turn` picks who starts), `repeats` times each: per path the
    median wall and CPU seconds (CPU time is this process's, all threads: what the other sessions on a
    shared machine do not inflate; meaningless on a GPU, where `sync` waits for the device), and the MD and
    KD terms (2, R)."""
    paths = _paths(teacher)
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in PATHS}
    terms: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for path in PATHS if (repeat + turn) % 2 == 0 else PATHS[::-1]:
            sync()
            wall, cpu = time.perf_counter(), time.process_time()
            terms[path] = torch.stack(paths[path](layer, kind, units, width))
            sync()
            times[path].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {
        p: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for p, t in times.items()
    }
    return medians, terms


@torch.no_grad()
def bench_preset(repeats: int, seed: int) -> dict:
    """Every unit of the preset by both paths, chunk by chunk (K units), the two alternating on each chunk
    (so a burst of load on the shared machine hits both): summed median seconds and the largest difference."""
    model = load_preset_model("digits-vit", progress=False)
    images = _calibration(32, seed)
    settings = OptinSettings(seed=seed)
    start = time.perf_counter()
    teacher = TrajectoryLosses(model, images, settings)
    teacher_s = time.perf_counter() - start
    heads, neurons = UnitMasks.dense(model).kept()
    seconds = {(p, clock): 0.0 for p in PATHS for clock in ("wall", "CPU")}
    terms: dict[str, list[torch.Tensor]] = {p: [] for p in PATHS}
    turn = 0
    for layer in range(len(heads)):
        for kind, width in (("heads", heads[layer]), ("neurons", neurons[layer])):
            for units in torch.arange(width).split(settings.candidates_per_pass):
                medians, chunk_terms = _interleaved(teacher, layer, kind, units, width, repeats, turn)
                turn += 1
                for path in PATHS:
                    seconds[path, "wall"] += medians[path][0]
                    seconds[path, "CPU"] += medians[path][1]
                    terms[path].append(chunk_terms[path])
    old, new = (torch.cat(terms[p], dim=1) for p in PATHS)
    diff = ((new - old).abs().amax(dim=1) / old.abs().amax(dim=1)).tolist()
    end_to_end = []
    for _ in range(repeats):
        start = time.perf_counter()
        optin_scores(model, images, settings, progress=False)
        end_to_end.append(time.perf_counter() - start)
    row = {
        "units": old.shape[1],
        "teacher_s": round(teacher_s, 3),
        **{f"{p} {clock} s": round(t, 2) for (p, clock), t in seconds.items()},
        "speed-up (CPU)": round(seconds[PATHS[0], "CPU"] / seconds[PATHS[1], "CPU"], 2),
        "optin_scores s (new, end to end)": round(statistics.median(end_to_end), 2),
        "max |MD new - old| / max MD": f"{diff[0]:.1e}",
        "max |KD new - old| / max KD": f"{diff[1]:.1e}",
    }
    print(json.dumps(row), flush=True)
    return row


def _block_macs(costs: VitCosts) -> list[int]:
    return [
        costs.block_macs(h, n, t)
        for h, n, t in zip(*[getattr(costs.widths, k) for k in ("heads", "neurons", "tokens")], strict=True)
    ]


def candidate_macs(costs: VitCosts, images: int, layer: int, kind: str, fast: bool) -> int:
    """MACs one candidate of `layer` costs at `images` calibration images: the blocks it runs (the old path
    from its own block; the fast path after it, plus its block's MLP for a head); norms, MD, KD not counted."""
    blocks = _block_macs(costs)
    tokens, neurons = costs.widths.tokens[layer], costs.widths.neurons[layer]
    own = (neurons * costs.neuron_macs(tokens) if kind == "heads" else 0) if fast else blocks[layer]
    return images * (own + sum(blocks[layer + 1 :]))


@torch.no_grad()
def bench_deit(
    name: str, images: int, chunk: int, repeats: int, full: bool, device: str
) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval().to(device)
    batch = torch.randn(images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)

    def sync() -> None:
        if batch.is_cuda:
            torch.cuda.synchronize(batch.device)

    costs = VitCosts.of(model)
    start = time.perf_counter()
    teacher = TrajectoryLosses(model, batch, OptinSettings())
    teacher_s = time.perf_counter() - start
    heads, neurons = costs.widths.heads, costs.widths.neurons
    rows = []
    for layer in range(len(heads)):
        for kind, width, count in (
            ("neurons", neurons[layer], min(chunk, neurons[layer])),
            ("heads", heads[layer], heads[layer]),
        ):
            medians, _ = _interleaved(teacher, layer, kind, torch.arange(count), width, repeats, layer, sync)
            (old_s, old_cpu), (new_s, new_cpu) = ((w / count, c / count) for w, c in medians.values())
            rows.append(
                {
                    "block": layer,
                    "kind": kind,
                    "candidates": width,
                    "old s/candidate": round(old_s, 4),
                    "new s/candidate": round(new_s, 4),
                    "old CPU s/candidate": round(old_cpu, 4),
                    "new CPU s/candidate": round(new_cpu, 4),
                    "speed-up (CPU)": round(old_cpu / new_cpu, 2),
                    "old GMAC/candidate": round(candidate_macs(costs, images, layer, kind, False) / 1e9, 2),
                    "new GMAC/candidate": round(candidate_macs(costs, images, layer, kind, True) / 1e9, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    totals = {
        "model": name,
        "images": images,
        "units": sum(heads) + sum(neurons),
        "teacher_s": round(teacher_s, 1),
        **{
            f"{path} total {clock} s (extrapolated)": round(
                sum(r[f"{path}{key} s/candidate"] * r["candidates"] for r in rows) + teacher_s
            )
            for path in ("old", "new")
            for clock, key in (("wall", ""), ("CPU", " CPU"))
        },
        "old total TMAC": round(sum(r["old GMAC/candidate"] * r["candidates"] for r in rows) / 1e3, 1),
        "new total TMAC": round(sum(r["new GMAC/candidate"] * r["candidates"] for r in rows) / 1e3, 1),
    }
    if full:
        totals["K (candidates per pass, full run)"] = OptinSettings().candidates_per_pass
        sync()
        start = time.perf_counter()
        optin_scores(model, batch, OptinSettings())
        sync()
        totals["new total s (measured, optin_scores)"] = round(time.perf_counter() - start)
    print(json.dumps(totals), flush=True)
    return rows, totals


def whole_model_macs(name: str, images: int) -> tuple[float, float]:
    """(old, new) MACs of scoring every unit of `name` at `images` calibration images (analytic; a model on
    the meta device, so DeiT-Small and -Base cost nothing to count)."""
    with torch.device("meta"):
        costs = VitCosts.of(timm.create_model(name, pretrained=False))
    total = {True: 0.0, False: 0.0}
    for layer, (h, n) in enumerate(zip(costs.widths.heads, costs.widths.neurons, strict=True)):
        for fast in total:
            total[fast] += h * candidate_macs(costs, images, layer, "heads", fast)
            total[fast] += n * candidate_macs(costs, images, layer, "neurons", fast)
    return total[False], total[True]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="preset: timed runs of each path per chunk")
    parser.add_argument("--seed", type=int, default=57)
    parser.add_argument("--deit", default="deit_tiny_patch16_224")
    parser.add_argument("--deit-images", type=int, default=32)
    parser.add_argument("--chunk", type=int, default=8, help="DeiT: neurons timed per block")
    parser.add_argument("--deit-repeats", type=int, default=2)
    parser.add_argument(
        "--deit-full", action="store_true", help="DeiT: also score the whole model (fast path)"
    )
    parser.add_argument("--skip-deit", action="store_true")
    parser.add_argument(
        "--device", default="cpu", help="DeiT part on this device; cuda writes optin_scoring_gpu.json"
    )
    parser.add_argument(
        "--gpu-tflops", type=float, default=40.0, help="sustained fp32 TFLOP/s assumed for H100"
    )
    args = parser.parse_args()
    print(
        json.dumps({"torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads()})
    )
    preset = bench_preset(args.repeats, args.seed)
    deit_rows, totals = (
        ([], {})
        if args.skip_deit
        else bench_deit(
            args.deit, args.deit_images, args.chunk, args.deit_repeats, args.deit_full, args.device
        )
    )
    gpu = []
    for name in ("deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"):
        old, new = whole_model_macs(name, 32)
        gpu.append(
            {
                "model": name,
                "old PMAC": round(old / 1e15, 3),
                "new PMAC": round(new / 1e15, 3),
                f"new at {args.gpu_tflops:g} TFLOP/s (estimate)": f"{2 * new / (args.gpu_tflops * 1e12) / 60:.1f} min",
            }
        )
    tables = [
        results.table_of_dicts(
            "trained digits-vit (32 images): every unit scored by both paths, interleaved", [preset]
        )
    ]
    headline = [
        results.headline(
            "OPTIN scoring of digits-vit, every unit, 32 images: fast path vs masked pass (CPU time)",
            f"{preset[PATHS[1] + ' CPU s']} s vs {preset[PATHS[0] + ' CPU s']} s",
            "",
            f"summed medians of {args.repeats} interleaved runs per chunk; MD/KD agree to "
            f"{preset['max |MD new - old| / max MD']}/{preset['max |KD new - old| / max KD']} of the largest",
        )
    ]
    if deit_rows:
        tables.append(
            results.table_of_dicts(
                f"{args.deit} (random weights, {args.deit_images} images at 224 px): seconds per candidate, "
                "per block",
                deit_rows,
            )
        )
        tables.append(results.table_of_dicts(f"{args.deit}: whole-model scoring", [totals]))
        measured = totals.get("new total s (measured, optin_scores)")
        headline.append(
            results.headline(
                f"OPTIN scoring of {args.deit} at 224 px, {args.deit_images} images, whole model, one core: "
                "new path" + (" (measured, wall)" if measured else " (extrapolated, CPU time)"),
                round((measured or totals["new total CPU s (extrapolated)"]) / 60),
                "min",
                f"old path {totals['old total CPU s (extrapolated)'] / 60:.0f} min; extrapolated from every "
                "block's per-candidate cost",
            )
        )
    tables.append(
        results.table_of_dicts("whole-model scoring work at 32 images (analytic) and an H100 estimate", gpu)
    )
    headline.append(
        results.headline(
            "OPTIN scoring of DeiT-Small, 32 images, on one H100 (estimate)",
            gpu[1][f"new at {args.gpu_tflops:g} TFLOP/s (estimate)"],
            "",
            f"estimate from {gpu[1]['new PMAC']} PMAC at {args.gpu_tflops:g} TFLOP/s sustained fp32; not measured",
        )
    )
    results.write_results(
        "optin_scoring" if args.device == "cpu" else "optin_scoring_gpu",
        title="OPTIN scoring speed: the fast path against the masked pass (issues 15, 25)",
        headline=headline,
        tables=tables,
        notes=NOTES,
        order=40 if args.device == "cpu" else 41,  # BENCHMARKS.md position, next to the structured results
    )


NOTES = (
    "Both paths compute the same MD and KD terms (tests/test_structured.py checks them against each other to "
    "1e-8 in float64). The old path masks each candidate and runs its block again; the new one subtracts the "
    "unit's share from the teacher's block output (a neuron: a rank-one term) or from the stream after "
    "attention (a head: then only that block's MLP runs), so a candidate of block l runs blocks > l only. "
    "Per-candidate seconds are medians of interleaved runs on a shared 2-core machine (see the load), as wall "
    "time and as this process's CPU time (which the other sessions' load does not inflate, bar memory "
    "bandwidth); whole-model times extrapolated from them sum seconds per candidate times candidates per "
    "block (all of a block's candidates have the same shapes), plus the teacher pass. "
    "The H100 column divides the analytic forward MACs (x2 FLOPs) by an assumed sustained fp32 rate: an "
    "estimate, not a measurement; Gram products (float64) and norms are left out."
)


if __name__ == "__main__":
    main()
