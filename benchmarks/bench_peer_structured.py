"""Peer benchmark (issue 25): our structured scorers against Torch-Pruning 1.6.1 on the same axes.

Same preset weights, splits, calibration images and MAC budgets for every method: per calibration seed, the
32 training images and labels that `calibration_batch` draws for our structured jobs (labels for the Taylor
criteria only); per budget, the kept heads and MLP neurons, the MACs counted by `VitCosts`, test top-1 of
`shrink(dense, masks)` on the preset's held-out test split, and every model timed against the dense one in ONE
interleaved loop (`measure.speed.compare_models`: batch-1 latency and batch-N throughput, median ratios).

- Ours: every structured scorer registered (`pruning.names.STRUCTURED_METHODS`: OPTIN and the baselines),
  scores cached on disk like `ovit-ray prune` (`training.structured.cached_scores`), then `search_flops`.
- Torch-Pruning (`pip install -e '.[bench]'`): its L1 group magnitude and first-order Taylor importance on
  whole heads and MLP neurons, global ranking, the residual width untouched; its pruning ratio searched until
  the MACs are within 1% of the budget (`peer_torch_pruning.py`; its Hessian importance is not used: in 1.6.1
  it keeps only the last sample's gradient).

Statistics: mean ± std over seeds; each pair (ours vs peer, OPTIN vs our baselines) at a budget gets the
difference of test top-1 with its Welch 95% interval (`orchestration.results.stats`) and a paired t-test
p-value (seeds share calibration images); "wins" / "loses" only when the interval excludes 0.

Rows are kept in `--out`/rows.jsonl (a rerun skips what is there) and the table goes to
`benchmarks/results/peer_structured.json` (every preset found in the rows).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_peer_structured.py --presets digits-vit
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_peer_structured.py --presets digits32-vit --batch 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peer_tables import results_tables
from peer_torch_pruning import CRITERIA, prune_to_budget
from results_file import command, load_average, write_results
from torch import nn

from ovit_ray.measure.speed import compare_models
from ovit_ray.pruning.names import STRUCTURED_METHODS
from ovit_ray.pruning.structured import OptinSettings, UnitMasks, VitCosts, search_flops, shrink
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.preset import load_preset_model, preset_dataset
from ovit_ray.training.structured import cached_scores, calibration_batch

Row = dict[str, Any]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["digits-vit"])
    p.add_argument("--budgets", nargs="+", type=float, default=[0.9, 0.7, 0.5], help="MACs ratios")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="calibration seeds")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--methods", nargs="+", help="ours (default: every registered structured method)")
    p.add_argument("--peers", nargs="+", choices=list(CRITERIA), default=list(CRITERIA))
    p.add_argument("--batch", type=int, default=256, help="throughput batch size")
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--throughput-runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads while timing")
    p.add_argument("--out", type=Path, default=Path("runs/bench_peer_structured"))
    p.add_argument(
        "--tables-only", action="store_true", help="rebuild the results file from --out's rows (no runs)"
    )
    return p.parse_args(argv)


def _masks_row(masks: UnitMasks) -> dict[str, list[list[int]]]:
    return {
        "heads_kept_idx": [m.nonzero().flatten().tolist() for m in masks.heads],
        "neurons_kept_idx": [m.nonzero().flatten().tolist() for m in masks.neurons],
    }


def _masks_of(row: Row, dense: nn.Module) -> UnitMasks:
    full = UnitMasks.dense(dense)

    def build(sizes: tuple[torch.Tensor, ...], kept: list[list[int]]) -> tuple[torch.Tensor, ...]:
        out = []
        for m, idx in zip(sizes, kept, strict=True):
            keep = torch.zeros(len(m), dtype=torch.bool)
            keep[idx] = True
            out.append(keep)
        return tuple(out)

    return UnitMasks(build(full.heads, row["heads_kept_idx"]), build(full.neurons, row["neurons_kept_idx"]))


def prune_rows(preset: str, args: argparse.Namespace, done: set[tuple]) -> list[Row]:
    """One row per (method, budget, seed) not in `done`: kept units, achieved MACs, test top-1, seconds."""
    dense = load_preset_model(preset, progress=False)
    dense_macs = VitCosts.of(dense).macs()
    methods = args.methods or [m for m in STRUCTURED_METHODS if m != "structured-magnitude"]
    data = preset_dataset(preset)
    test = make_loader(data.test, 256, shuffle=False, seed=0)
    rows = []
    for seed in args.seeds:
        images, labels = calibration_batch(data, args.calib_size, seed)
        for method in [*methods, *args.peers]:
            if all((preset, method, b, seed) in done for b in args.budgets):
                continue
            scores, score_s = None, 0.0
            if method not in CRITERIA:
                began = time.perf_counter()
                scores, cached, _ = cached_scores(
                    dense, images, method, OptinSettings(seed=seed), labels=labels
                )
                score_s = 0.0 if cached else time.perf_counter() - began
            for budget in args.budgets:
                if (preset, method, budget, seed) in done:
                    continue
                began = time.perf_counter()
                extra: Row = {}
                if scores is not None:
                    found = search_flops(scores.heads, scores.neurons, VitCosts.of(dense), budget)
                    masks, macs = found.masks, found.achieved_macs
                else:
                    peer = prune_to_budget(dense, images, labels, method, budget)
                    masks, macs = peer.masks, peer.achieved_macs
                    extra = {
                        "tp_head_ratio": peer.head_ratio,
                        "tp_neuron_ratio": peer.neuron_ratio,
                        "tp_tries": peer.tries,
                        "tp_vs_shrunk_max_logit_diff": peer.max_logit_diff,
                    }
                with torch.no_grad():
                    top1 = evaluate(shrink(dense, masks).eval(), test, device="cpu")["top1"]
                heads, neurons = masks.kept()
                rows.append(
                    {
                        "preset": preset,
                        "method": method,
                        "budget": budget,
                        "seed": seed,
                        "achieved_ratio": macs / dense_macs,
                        "top1": top1,
                        "heads": list(heads),
                        "neurons": list(neurons),
                        "score_seconds": score_s,
                        "prune_seconds": time.perf_counter() - began,
                        **extra,
                        **_masks_row(masks),
                    }
                )
                print(
                    f"{preset} {method:>14} {budget:.2f} seed {seed}: top-1 {100 * top1:.2f}%, "
                    f"MACs {macs / dense_macs:.3f}, heads {sum(heads)}, neurons {sum(neurons)}",
                    flush=True,
                )
    return rows


def time_rows(preset: str, rows: list[Row], args: argparse.Namespace) -> None:
    """Every row's model against the dense one in one interleaved loop per batch size (speed-ups in place)."""
    dense = load_preset_model(preset, progress=False)
    models: dict[str, nn.Module] = {"dense": dense}
    for i, row in enumerate(rows):
        models[str(i)] = shrink(dense, _masks_of(row, dense)).eval()
    size = int(dense.patch_embed.img_size[0])  # type: ignore[index]
    for key, batch, runs in (
        ("speedup_latency", 1, args.latency_runs),
        ("speedup_throughput", args.batch, args.throughput_runs),
    ):
        began = time.perf_counter()
        found = compare_models(
            models, batch_size=batch, image_size=size, warmup=min(5, runs), runs=runs, threads=args.threads
        )
        for i, row in enumerate(rows):
            row[key] = found.speedups[str(i)]
            row[f"{key}_setting"] = (
                f"batch {batch}, {runs} rounds, {found.stats['dense'].env['threads']} thread(s)"
            )
            row["command"] = command()  # the run that timed it (and pruned it, or resumed its rows)
            row["load"] = load_average()
        row_env = found.stats["dense"].env
        print(
            f"{preset}: timed {len(models)} models at batch {batch} ({runs} rounds) in "
            f"{time.perf_counter() - began:.0f} s; dense median {1e3 * found.stats['dense'].median_s:.1f} ms "
            f"({row_env['threads']} thread(s))",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.jsonl"
    kept = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["preset"], r["method"], r["budget"], r["seed"]) for r in kept}
    for preset in [] if args.tables_only else args.presets:
        new = prune_rows(preset, args, done)
        with path.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in new)
        kept += new
    for preset in [] if args.tables_only else args.presets:  # timed again; other presets keep theirs
        time_rows(preset, [r for r in kept if r["preset"] == preset], args)
    partial = path.with_suffix(".tmp")
    partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
    partial.replace(path)
    presets = list(dict.fromkeys(r["preset"] for r in kept))
    test_images = {p: len(preset_dataset(p).test) for p in presets}  # type: ignore[arg-type]
    tables, headline, notes = results_tables(kept, test_images)
    write_results(
        "peer_structured",
        title="Structured pruning against a peer: ours vs Torch-Pruning 1.6.1 on the same axes (issue 25)",
        headline=headline,
        tables=tables,
        notes=notes,
        order=10,
        command=" && ".join(dict.fromkeys(r["command"] for r in kept if "command" in r)),
        load="; ".join(dict.fromkeys(f"{r['preset']} timed at {r['load']}" for r in kept if "load" in r)),
        seconds_total=round(statistics.fsum(r["prune_seconds"] + r["score_seconds"] for r in kept), 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
