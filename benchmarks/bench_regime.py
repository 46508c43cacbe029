"""A discriminating regime on the bundled digits: gradual runs to high targets with short recovery.

Why: with the default budgets every gradual run recovers the dense 99%+ on digits whatever the knob,
so the ablation tables answer nothing. This runs the `gradual` kind over the ablation knob (method, or B)
x seeds as one grid through the one driver in this process (`resources.local`: the loop a sweep's trial
runs, without Ray), with targets up to 0.95-0.98 and a recovery budget of a few optimizer steps per target,
then prints mean ± std over seeds and every pairwise difference of test top-1 with its Welch 95% interval
(`orchestration.results.stats`), `*` where it excludes 0. With `--strategies sweep independent` it also
runs one independent run per target (the sweep's epoch budget up to that target, every step heading
straight for it) to compare the single-run sweep against them.

    .venv/bin/python benchmarks/bench_regime.py --methods ovit ovit-noupdate magnitude --out runs/bench_regime_methods
    .venv/bin/python benchmarks/bench_regime.py --methods ovit --block-size 16 64 256 --out runs/bench_regime_B
    .venv/bin/python benchmarks/bench_regime.py --methods ovit --strategies sweep independent --out runs/bench_regime_strategy
    .venv/bin/python benchmarks/bench_regime.py --quick   # one seed, two targets, 2 steps per epoch
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import results_file as results
from sweep_runs import Row, parse_with_quick, results_folder, run_folder

from ovit_ray.orchestration.results.stats import pairwise_table, summarize
from ovit_ray.orchestration.results.table import plain_table

GROUP = ["strategy", "method", "block_size"]
QUICK = {"targets": [0.9, 0.95], "seeds": [0], "max_steps": 2, "num_grads": 16}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits-vit")
    p.add_argument("--methods", nargs="+", default=["ovit", "ovit-noupdate"])
    p.add_argument("--block-size", nargs="+", type=int, default=[64])
    p.add_argument("--targets", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", choices=["sweep", "independent"], default=["sweep"])
    p.add_argument("--window-epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=8, help="optimizer steps per epoch (the recovery budget)")
    p.add_argument("--num-grads", type=int, default=32)
    p.add_argument(
        "--out", default="runs/bench_regime", help="the sweep's output folder (one folder per grid)"
    )
    return parse_with_quick(p, argv, QUICK)


def ablated(args: argparse.Namespace) -> str:
    """The knob this run ablates (names the results file: regime_<knob>.json)."""
    return "strategy" if len(args.strategies) > 1 else "block_size" if len(args.block_size) > 1 else "methods"


def regime_sweep(args: argparse.Namespace) -> dict[str, Any]:
    grids = {"strategy": args.strategies, "method": args.methods, "block_size": args.block_size}
    return {
        "name": f"bench_regime_{ablated(args)}" + ("_quick" if args.quick else ""),
        "model": args.model,
        "seeds": list(dict.fromkeys(args.seeds)),
        "gradual": {
            "targets": args.targets,
            "window_epochs": args.window_epochs,
            "num_grads": args.num_grads,
            "max_steps_per_epoch": args.max_steps,
        },
        "search": {"params": {k: {"grid": list(dict.fromkeys(v))} for k, v in grids.items()}},
        "resources": {"workers": 1, "cpus_per_worker": 1, "local": True},
        "mlflow": {"experiment": "bench-regime"},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ran = run_folder(regime_sweep(args), args.out)
    rows = ran.rows
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        groups.setdefault((*(r[k] for k in GROUP), r["target"]), []).append(r)
    summary = [
        {
            "strategy": s,
            "method": m,
            "B": b,
            "target": t,
            "n": len(v),
            "test top-1 (%)": summarize([r["top1"] for r in v]).text(100),
            "epochs": summarize([r["epochs_trained"] for r in v]).text(1),
        }
        for (s, m, b, t), v in sorted(groups.items())
    ]
    pairs = pairwise_table(rows, GROUP)
    print(plain_table(summary, "mean ± std over seeds"))
    print(plain_table(pairs, "test top-1 a - b (pp), Welch 95% CI, * = excludes 0"))
    knob = ablated(args)
    results.write_results(
        f"regime_{knob}",
        title=f"Gradual pruning with short recovery on {args.model}: {knob.replace('_', ' ')}",
        headline=[
            results.headline(
                f"{pair['a']} minus {pair['b']} at sparsity {pair['target']}",
                pair["a - b, 95% CI"],
                "pp",
                f"test top-1 {pair['top1 a']} vs {pair['top1 b']}; n = {pair['n (a, b)']}; Welch 95%, * excludes 0",
            )
            for pair in [p for p in pairs if p["target"] == max(args.targets)][:1]
        ],
        tables=[
            results.table_of_dicts("test top-1, mean ± std over seeds", summary),
            results.table_of_dicts("test top-1 a - b (pp), Welch 95% CI, * = excludes 0", pairs),
        ],
        notes=f"The `gradual` kind as one grid in this process (the loop a sweep's trial runs) to targets "
        f"{args.targets} with {args.window_epochs}-epoch windows of {args.max_steps} optimizer steps "
        f"(m = {args.num_grads}), seeds {args.seeds}; top-1 on the held-out test split, the checkpoint of each "
        "target picked on val; `epochs` are those a target's run had trained when its window closed.",
        results_dir=results_folder(args.quick, args.out),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
