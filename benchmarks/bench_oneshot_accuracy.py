"""One-shot top-1 on the digits preset: methods x sparsities x seeds, mean and std (issue 2, "Benchmarks").

Why a script next to `ovit-ray prune`: the targets are about means over seeds (the seed changes the
mini-batches the Fisher is built from), and about the gap between methods at high sparsity. So this runs
the `oneshot` kind (one Fisher per method and knob setting, every sparsity pruned from the dense weights)
as a grid over methods x knob values x seeds through the one driver, in this process
(`resources.local`), and summarises the rows against the issue-2 targets. All pruning, evaluation and
result writing is the library's; the folder resumes if the same grid is run again.

    .venv/bin/python benchmarks/bench_oneshot_accuracy.py --out runs/bench_accuracy
    .venv/bin/python benchmarks/bench_oneshot_accuracy.py --damp 1e-6 1e-7 1e-8 --num-grads 128 256
    .venv/bin/python benchmarks/bench_oneshot_accuracy.py --quick   # one seed, two methods, small m
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import results_file as result_files
from sweep_runs import Row, parse_with_quick, results_folder, run_folder

from ovit_ray.pruning import method_names

SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9)
TARGET_SPARSITIES = (0.7, 0.8, 0.9)  # where the method ordering must hold
KNOBS = ("block_size", "num_grads", "damp", "grad_batch_size")
QUICK = {"method": ["ovit", "magnitude"], "sparsity": [0.5, 0.9], "seeds": [0], "num_grads": [16]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-vit", help="preset or timm model (default: digits-vit)")
    p.add_argument(
        "--method",
        nargs="+",
        default=list(method_names()),
        choices=method_names(),
        metavar="METHOD",
        help=f"methods (default: {' '.join(method_names())})",
    )
    p.add_argument("--sparsity", nargs="+", type=float, default=list(SPARSITIES), metavar="S")
    p.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="gradient-batch seeds (default: 0 1 2)"
    )
    p.add_argument(
        "--block-size", "-B", nargs="+", type=int, default=[64], help="Fisher block size(s) (default: 64)"
    )
    p.add_argument(
        "--num-grads", "-m", nargs="+", type=int, default=[128], help="number(s) of gradients (default: 128)"
    )
    p.add_argument(
        "--damp", nargs="+", type=float, default=[1e-7], help="dampening lambda value(s) (default: 1e-7)"
    )
    p.add_argument(
        "--grad-batch-size", nargs="+", type=int, default=[16], help="images per gradient (default: 16)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--out",
        default="runs/bench_accuracy",
        help="output folder of the sweep (default: runs/bench_accuracy; runs/bench_accuracy_quick with --quick)",
    )
    return parse_with_quick(p, argv, QUICK, "runs/bench_accuracy_quick")


def oneshot_sweep(args: argparse.Namespace, sparsities: Sequence[float]) -> dict[str, Any]:
    """The grid: methods x knob values x seeds, each trial one method's Fisher pruned to every sparsity."""
    grids = {"method": list(dict.fromkeys(args.method))} | {
        k: list(dict.fromkeys(getattr(args, k))) for k in KNOBS
    }
    return {
        "name": "bench_oneshot_accuracy" + ("_quick" if args.quick else ""),
        "model": args.model,
        "seeds": list(dict.fromkeys(args.seeds)),
        "oneshot": {"sparsities": list(sparsities), "device": args.device},
        "search": {"params": {k: {"grid": v} for k, v in grids.items()}},
        "resources": {"workers": 1, "cpus_per_worker": 1, "local": True},
        "mlflow": {"experiment": "bench-oneshot-accuracy"},
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(
    rows: Sequence[Row], methods: Sequence[str], sparsities: Sequence[float]
) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(method, sparsity) -> (mean top-1, std, number of seeds)."""
    summary = {}
    for method, sparsity in itertools.product(methods, sparsities):
        top1 = [
            float(r["top1"])
            for r in rows
            if r["method"] == method and abs(float(r["target"]) - sparsity) < 1e-9
        ]
        if top1:
            summary[(method, sparsity)] = (*mean_std(top1), len(top1))
    return summary


def markdown_table(summary: dict, methods: Sequence[str], sparsities: Sequence[float], dense: float) -> str:
    """Methods as rows, sparsities as columns, cells 'mean ± std' in percent."""
    lines = [
        "| method | " + " | ".join(f"s={s:g}" for s in sparsities) + " |",
        "|---|" + "---|" * len(sparsities),
    ]
    for method in methods:
        cells = []
        for s in sparsities:
            if (method, s) in summary:
                mean, std, _ = summary[(method, s)]
                cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
            else:
                cells.append("-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append(f"| dense | {100 * dense:.1f} (all sparsities) |" + " |" * (len(sparsities) - 1))
    return "\n".join(lines)


def check_targets(summary: dict, dense: float) -> list[tuple[str, bool | None]]:
    """The issue-2 accuracy targets; None where the needed cells were not run."""

    def mean(method: str, s: float) -> float | None:
        return summary[(method, s)][0] if (method, s) in summary else None

    checks: list[tuple[str, bool | None]] = []
    for s in TARGET_SPARSITIES:
        o, w, m = mean("ovit", s), mean("woodfisher", s), mean("magnitude", s)
        ok = None if o is None or w is None or m is None else o >= w >= m
        checks.append((f"s={s:g}: ovit >= woodfisher >= magnitude", ok))
    o8, o9 = mean("ovit", 0.8), mean("ovit", 0.9)
    checks.append(("ovit at 0.8 within 3 points of dense", None if o8 is None else dense - o8 <= 0.03))
    checks.append(("ovit at 0.9 above 80% top-1", None if o9 is None else o9 > 0.80))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for s in args.sparsity:
        if not 0 <= s < 1:
            raise SystemExit(f"--sparsity: must be in [0, 1), got {s}")
    sparsities = sorted(set(args.sparsity))
    methods = list(dict.fromkeys(args.method))
    ran = run_folder(oneshot_sweep(args, sparsities), args.out)
    by_knobs: dict[tuple[Any, ...], list[Row]] = {}
    for r in ran.rows:
        by_knobs.setdefault(tuple(r[k] for k in KNOBS), []).append(r)
    all_ok = True
    tables: list[dict] = []
    headline: list[dict] = []
    checks: list[str] = []
    for values in itertools.product(*(dict.fromkeys(getattr(args, k)) for k in KNOBS)):
        rows = by_knobs.get(values, [])
        if not rows:  # every trial of this setting failed (see trials.parquet)
            continue
        knobs = dict(zip(KNOBS, values, strict=True))
        dense = float(rows[0]["top1_dense"])
        summary = summarize(rows, methods, sparsities)
        knob_text = ", ".join(f"{k}={v:g}" for k, v in knobs.items())
        print(
            f"\n### {args.model}: {knob_text}, seeds {' '.join(map(str, args.seeds))} "
            f"(top-1 %, mean ± sample std over seeds)\n"
        )
        table = markdown_table(summary, methods, sparsities, dense)
        print(table)
        print()
        tables += result_files.tables_from_markdown(table, f"{args.model}: {knob_text}, test top-1 (%)")
        for text, ok in check_targets(summary, dense):
            all_ok &= ok is not False
            checks.append(f"{knob_text}: {text}: {'not run' if ok is None else 'met' if ok else 'MISSED'}")
            print(f"- target {checks[-1].split(': ', 1)[1]}")
        top = (methods[0], sparsities[-1])
        if not headline and top in summary:  # the first method at the highest sparsity of the first setting
            mean, std, n = summary[top]
            headline.append(
                result_files.headline(
                    f"one-shot {top[0]} at sparsity {top[1]:g}, {args.model} ({knob_text})",
                    f"{100 * mean:.1f} ± {100 * std:.1f}",
                    "%",
                    f"test top-1; dense {100 * dense:.1f}%; {n} seeds",
                )
            )
        print(flush=True)
    print(f"rows: {ran.out / 'results.parquet'} (table and plots: ovit-ray report {ran.out})")
    result_files.write_results(
        "oneshot_accuracy",
        title=f"One-shot unstructured pruning on {args.model}: methods x sparsities",
        headline=headline,
        tables=tables,
        notes=f"Top-1 on the held-out test split, mean ± sample std over gradient-batch seeds {args.seeds}; "
        "the `oneshot` kind (one Fisher per method and setting, every sparsity pruned from the dense weights) "
        "run as one grid in this process. Targets (issue 2): " + "; ".join(checks) + ".",
        results_dir=results_folder(args.quick, args.out),
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
