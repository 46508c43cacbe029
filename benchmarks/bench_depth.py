"""BoundaryDPT on the bundled preset (issue 16): the recovery-asymmetry measurement and the stage-order ablation.

1. Recovery asymmetry: remove k attention sublayers, or linearise k activations (a = 0 at once, then merged),
   chosen by the same scorer; test top-1 right after removal and after each of 1..K recovery epochs of KD from
   the dense model; mean ± std over seeds.
2. Stage order at a fixed budget: the same plan (attention drops, activations) and the same epochs, stage 1
   (attention) first or stage 2 (activation, annealed) first; test top-1 of the best-on-val final model per
   seed, and attention-first minus activation-first with its Welch 95% interval.

Every run is `training.depth.run_depth` in this process (`LocalReporter`), so exactly what a sweep runs.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_depth.py --out runs/bench_depth
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import results_file as results

from ovit_ray.orchestration.results.stats import Difference, summarize, welch_difference
from ovit_ray.training.depth import DepthSpec
from ovit_ray.training.depth.run import run_depth
from ovit_ray.training.gradual import LocalReporter


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_depth")
    p.add_argument("--model", default="digits-vit")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--counts", nargs="+", type=int, default=[1, 2], help="k removals of each type")
    p.add_argument("--recovery-epochs", type=int, default=4, help="K")
    p.add_argument("--scorer", default="cosine")
    p.add_argument("--order-plan", nargs=2, type=int, default=[2, 2], help="attention drops, activations")
    p.add_argument("--order-epochs", nargs=2, type=int, default=[2, 1], help="stage 1, stage 2 epochs")
    p.add_argument("--max-steps", type=int, default=None, help="cap every epoch (default: full epochs)")
    return p.parse_args(argv)


def _run(spec: DepthSpec, folder: Path) -> dict[str, Any]:
    reporter = LocalReporter(folder)
    summary = run_depth(spec, reporter)
    return {"summary": summary, "history": reporter.history}


def recovery(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """One record per (type, k, seed): top-1 after removal, then after each recovery epoch."""
    records = []
    for kind in ("attention", "activation"):
        for k in args.counts:
            for seed in args.seeds:
                common = dict(
                    model=args.model, scorer=args.scorer, seed=seed, max_steps_per_epoch=args.max_steps
                )
                if kind == "attention":  # dropped, then K epochs of KD
                    spec = DepthSpec(
                        attention=k,
                        activation=0,
                        stage1_epochs=args.recovery_epochs,
                        stage2_epochs=0,
                        **common,
                    )
                else:  # linear at once (a stage 2 of no epochs), merged, then K epochs of KD
                    spec = DepthSpec(
                        attention=0,
                        activation=k,
                        stage_order="activation-first",
                        stage2_epochs=0,
                        stage1_epochs=args.recovery_epochs,
                        **common,
                    )
                run = _run(spec, out / "recovery" / spec.run_key)
                curve = [run["summary"]["notes"]["top1_after_removal"], *(h["top1"] for h in run["history"])]
                records.append({"kind": kind, "k": k, "seed": seed, "curve": curve})
                print(json.dumps(records[-1]), flush=True)
    return records


def stage_order(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    records = []
    n_attn, n_act = args.order_plan
    for order in ("attention-first", "activation-first"):
        for seed in args.seeds:
            spec = DepthSpec(
                model=args.model,
                attention=n_attn,
                activation=n_act,
                scorer=args.scorer,
                seed=seed,
                stage_order=order,
                stage1_epochs=args.order_epochs[0],
                stage2_epochs=args.order_epochs[1],
                max_steps_per_epoch=args.max_steps,
            )
            summary = _run(spec, out / "order" / spec.run_key)["summary"]
            records.append(
                {
                    "order": order,
                    "seed": seed,
                    "top1": summary["best"]["top1"],
                    "after_removal": summary["notes"]["top1_after_removal"],
                }
            )
            print(json.dumps(records[-1]), flush=True)
    return records


def print_tables(
    rec: list[dict[str, Any]], order: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[str, Difference | None]:
    """Print the two tables and the stage-order difference; returns them as markdown, and the difference."""
    epochs = args.recovery_epochs
    lines = ["| removed | k | after removal | " + " | ".join(f"+{e} ep" for e in range(1, epochs + 1)) + " |"]
    lines.append("|---|---|" + "---|" * (epochs + 1))
    for kind in ("attention", "activation"):
        for k in args.counts:
            curves = [r["curve"] for r in rec if r["kind"] == kind and r["k"] == k]
            cells = [summarize([c[e] for c in curves]).text(100) for e in range(epochs + 1)]
            lines.append(f"| {kind} | {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| stage order | n | test top-1 after removal (%) | final test top-1 (%) |",
        "|---|---|---|---|",
    ]
    by = {o: [r for r in order if r["order"] == o] for o in ("attention-first", "activation-first")}
    for name, rows in by.items():
        removal = summarize([r["after_removal"] for r in rows]).text(100)
        lines.append(
            f"| {name} | {len(rows)} | {removal} | {summarize([r['top1'] for r in rows]).text(100)} |"
        )
    diff = welch_difference(
        [r["top1"] for r in by["attention-first"]], [r["top1"] for r in by["activation-first"]]
    )
    lines += [
        "",
        f"attention-first - activation-first: {diff.text(100) if diff else 'n/a (fewer than 2 seeds)'} "
        "(test top-1 points, Welch 95%; * excludes 0)",
    ]
    text = "\n".join(lines)
    print(f"\n{text}")
    return text, diff


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    began = time.perf_counter()
    rec = recovery(args, out)
    order = stage_order(args, out)
    text, diff = print_tables(rec, order, args)
    print(f"\nwall {time.perf_counter() - began:.0f} s")
    tables = results.tables_from_markdown(text)
    tables[0]["title"] = "Recovery asymmetry: test top-1 (%) after removing k sublayers, then after KD epochs"
    tables[1]["title"] = "Stage order at a fixed budget: test top-1 of the best-on-val final model"
    results.write_results(
        "depth",
        title="BoundaryDPT depth pruning: recovery asymmetry and stage order",
        headline=[]
        if diff is None
        else [
            results.headline(
                "BoundaryDPT stage order at a fixed budget: attention-first minus activation-first",
                diff.text(100),
                "pp",
                "Welch 95%, * excludes 0; our reconstruction",
            )
        ],
        tables=tables,
        notes=text.splitlines()[-1] + f". Wall {time.perf_counter() - began:.0f} s; mean ± std over seeds.",
    )


if __name__ == "__main__":
    main()
