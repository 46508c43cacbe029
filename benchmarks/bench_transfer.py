"""The transfer table: oViT- vs magnitude-pruned vs dense source, sparse and dense modes, over seeds.

Runs a transfer sweep file (default sweeps/ablation_transfer.yaml) on the light single-process path,
optionally scaled down (epochs, seeds, targets, pairs) to fit a busy machine, then prints per
(dataset, mode, target) the mean ± std of transfer test top-1 per source, and the pairwise differences
with Welch 95% intervals (`*` = excludes 0). The dense source is compared at every target.

    .venv/bin/python benchmarks/bench_transfer.py --out runs/bench_transfer
    .venv/bin/python benchmarks/bench_transfer.py --pairs 1 --epochs 5 --out runs/bench_transfer_lfw
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import results_file as results
import yaml

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
from ovit_ray.orchestration.results.parquet import print_table
from ovit_ray.orchestration.results.stats import pairwise_table, summarize
from ovit_ray.orchestration.transfer.sweep_file import run_transfer_sweep


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default="sweeps/ablation_transfer.yaml")
    p.add_argument("--out", default="runs/bench_transfer")
    p.add_argument("--pairs", nargs="+", type=int, help="indices of the file's pairs to run (default: all)")
    p.add_argument("--epochs", type=int, help="transfer epochs (default: the file's)")
    p.add_argument("--seeds", nargs="+", type=int, help="transfer seeds (default: the file's)")
    p.add_argument("--targets", nargs="+", type=float, help="source targets (default: the file's)")
    p.add_argument("--max-steps", type=int, help="cap every transfer epoch (default: none)")
    p.add_argument("--source-max-steps", type=int, help="cap every epoch of the source runs (default: none)")
    return p.parse_args(argv)


def scaled(args: argparse.Namespace) -> dict:
    raw = read_yaml_mapping(args.file, "sweep file")
    stage = raw["transfer"]
    stage["light"] = True
    if args.pairs is not None:
        stage["pairs"] = [stage["pairs"][i] for i in args.pairs]
    for key, value in (
        ("epochs", args.epochs),
        ("seeds", args.seeds),
        ("max_steps_per_epoch", args.max_steps),
    ):
        if value is not None:
            stage[key] = value
    train = stage["source"].setdefault("train", {})
    if args.targets is not None:
        train["targets"] = args.targets
    if args.source_max_steps is not None:
        train["max_steps_per_epoch"] = args.source_max_steps
    return raw


def summary(rows: Sequence[dict]) -> None:
    targets = sorted({r["target_sparsity"] for r in rows if r["source_method"] != "dense"})
    points = []
    for r in rows:
        for t in targets if r["source_method"] == "dense" else [r["target_sparsity"]]:
            for mode in ("sparse", "dense") if r["source_method"] == "dense" else [r["mode"]]:
                points.append({**r, "point": f"{r['dataset']} {mode} s={t:g}"})
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["point"], p["source_method"]), []).append(p)
    summary_rows = [
        {
            "dataset / mode / target": k[0],
            "source": k[1],
            "n": len(v),
            "source test top-1 (%)": summarize([x["source_top1"] for x in v]).text(100),
            "transfer test top-1 (%)": summarize([x["top1"] for x in v]).text(100),
            "sparsity kept": f"{min(x['final_sparsity'] for x in v):.3f}",
        }
        for k, v in sorted(groups.items())
    ]
    pairs = pairwise_table(points, ["source_method"], within="point")
    print_table(summary_rows, title="transfer: mean ± std over seeds")
    print_table(pairs, title="transfer test top-1 a - b (pp), Welch 95% CI, * = excludes 0")
    results.write_results(
        "transfer",
        title="Transfer of pruned models",
        headline=[
            results.headline(
                f"transfer {pair['point']}: {pair['a']} minus {pair['b']}",
                pair["a - b, 95% CI"],
                "pp",
                f"n = {pair['n (a, b)']}; the largest difference whose Welch 95% interval excludes 0",
            )
            for pair in sorted(
                (p for p in pairs if p["excludes 0"]),
                key=lambda p: -abs(float(p["a - b, 95% CI"].split()[0])),
            )[:1]
        ],
        tables=[
            results.table_of_dicts("transfer test top-1, mean ± std over transfer seeds", summary_rows),
            results.table_of_dicts("transfer test top-1 a - b (pp), Welch 95% CI, * = excludes 0", pairs),
        ],
        notes="Sources pruned gradually (one source seed) and fine-tuned on the target data in sparse mode (masks "
        "kept) and dense mode (masks dropped); test top-1 on the target's held-out split.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "transfer.yaml"
        path.write_text(yaml.safe_dump(scaled(args)))
        rows = run_transfer_sweep(path, args.out)
    summary(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
