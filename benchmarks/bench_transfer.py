"""The transfer table: oViT- vs magnitude-pruned vs dense source, sparse and dense modes, over seeds.

Runs the transfer ablation's sweep files through the one driver in this process (`resources.local`): first
the sources (default sweeps/ablation_transfer_sources.yaml, a `gradual` sweep whose kept models are the
pruned sources), then each `transfer` sweep file (default sweeps/ablation_transfer.yaml, digits 0-4 -> 5-9,
and sweeps/ablation_transfer_lfw.yaml, digits -> lfw faces), optionally scaled down (epochs, seeds, source
targets, steps) to fit a busy machine; the sources sweep trains only the source models the chosen transfer
files read. Then prints per (dataset, mode, target) the mean ± std of transfer test top-1 per source, and
the pairwise differences with Welch 95% intervals (`*` = excludes 0). The dense source is compared at
every target.

    .venv/bin/python benchmarks/bench_transfer.py --out runs/bench_transfer
    .venv/bin/python benchmarks/bench_transfer.py --files sweeps/ablation_transfer_lfw.yaml --epochs 5 --out runs/bench_transfer_lfw
    .venv/bin/python benchmarks/bench_transfer.py --quick   # lfw only, one target, one seed, 2 steps per epoch
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import results_file as results
from sweep_runs import Row, parse_with_quick, results_folder, run_folder

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
from ovit_ray.orchestration.results.stats import pairwise_table, summarize
from ovit_ray.orchestration.results.table import plain_table

FILES = ["sweeps/ablation_transfer.yaml", "sweeps/ablation_transfer_lfw.yaml"]
QUICK = {
    "files": ["sweeps/ablation_transfer_lfw.yaml"],
    "targets": [0.5],
    "seeds": [0],
    "epochs": 1,
    "max_steps": 2,
    "source_max_steps": 2,
}
QUICK_SOURCES = {"window_epochs": 1, "num_grads": 16}  # the sources' own knobs in a --quick run


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sources", default="sweeps/ablation_transfer_sources.yaml", help="the sources' sweep file"
    )
    p.add_argument("--files", nargs="+", default=FILES, help="transfer sweep files (default: both ablations)")
    p.add_argument("--out", default="runs/bench_transfer", help="holds one folder per sweep")
    p.add_argument("--epochs", type=int, help="transfer epochs (default: the files')")
    p.add_argument("--seeds", nargs="+", type=int, help="transfer seeds (default: the files')")
    p.add_argument("--targets", nargs="+", type=float, help="source targets (default: the sources file's)")
    p.add_argument("--max-steps", type=int, help="cap every transfer epoch (default: none)")
    p.add_argument("--source-max-steps", type=int, help="cap every epoch of the source runs (default: none)")
    return parse_with_quick(p, argv, QUICK, "runs/bench_transfer_quick", f", sources with {QUICK_SOURCES}")


def scaled_transfer(args: argparse.Namespace, file: str) -> dict[str, Any]:
    raw = read_yaml_mapping(file, "sweep file")
    stage = raw["transfer"]
    for key, value in (("epochs", args.epochs), ("max_steps_per_epoch", args.max_steps)):
        if value is not None:
            stage[key] = value
    if args.seeds is not None:
        raw["seeds"] = args.seeds
    raw["resources"] = {**raw.get("resources", {}), "local": True}
    return raw


def scaled_sources(args: argparse.Namespace, transfers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sources sweep, its model grid cut to the models the transfer files read."""
    raw = read_yaml_mapping(args.sources, "sweep file")
    stage = raw["gradual"]
    for key, value in (("targets", args.targets), ("max_steps_per_epoch", args.source_max_steps)):
        if value is not None:
            stage[key] = value
    if args.quick:
        stage.update(QUICK_SOURCES)
    read = [t["transfer"]["sources"].get("models") for t in transfers]
    models = raw.get("search", {}).get("params", {}).get("model")
    if models is not None and None not in read:
        wanted = {m for found in read for m in found}
        models["grid"] = [m for m in models["grid"] if m in wanted]
    raw["resources"] = {**raw.get("resources", {}), "local": True}
    return raw


def summary(rows: Sequence[Row], quick: bool, out: Path) -> None:
    targets = sorted({r["target"] for r in rows if r["source_method"] != "dense"})
    modes = sorted({r["mode"] for r in rows})
    dense_modes = {
        r["mode"] for r in rows if r["source_method"] == "dense"
    }  # its sparse mode is its dense one
    points = []
    for r in rows:
        dense = r["source_method"] == "dense"  # the reference at every target and in every mode
        for t in targets if dense else [r["target"]]:
            for mode in [r["mode"], *(m for m in modes if m not in dense_modes)] if dense else [r["mode"]]:
                points.append({**r, "point": f"{r['dataset']} {mode} s={t:g}"})
    groups: dict[tuple[str, str], list[Row]] = {}
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
    print(plain_table(summary_rows, "transfer: mean ± std over seeds"))
    print(plain_table(pairs, "transfer test top-1 a - b (pp), Welch 95% CI, * = excludes 0"))
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
        notes="Sources pruned gradually (one source seed; the best-on-val model of each target kept) and the dense "
        "source, fine-tuned with a new head on the target data in sparse mode (masks kept) and dense mode (masks "
        "dropped), the `transfer` kind run as one grid per file in this process; test top-1 on the target's "
        "held-out split.",
        results_dir=results_folder(quick, out),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    transfers = [scaled_transfer(args, file) for file in args.files]
    sources = scaled_sources(args, transfers)
    run_folder(sources, out / sources["name"], path=args.sources)
    rows = []
    for file, raw in zip(args.files, transfers, strict=True):
        rows += run_folder(raw, out / raw["name"], path=file, out_parent=out).rows
    summary(rows, args.quick, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
