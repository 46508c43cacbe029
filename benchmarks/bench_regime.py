"""A discriminating regime on the bundled digits: gradual runs to high targets with short recovery.

Why: with the default budgets every gradual run recovers the dense 99%+ on digits whatever the knob,
so the ablation tables answer nothing. This runs the ablation knob (method, or B) x seeds on the light
single-process path (the loop the sweeps run), with targets up to 0.95-0.98 and a recovery budget of a
few optimizer steps per target, then prints mean ± std over seeds and every pairwise difference of
test top-1 with its Welch 95% interval (`orchestration.stats`), `*` where it excludes 0. With
`--strategies sweep independent` it also runs one independent run per target (the sweep's epoch budget up
to that target, every step heading straight for it) to compare the single-run sweep against them.

    .venv/bin/python benchmarks/bench_regime.py --methods ovit ovit-noupdate magnitude --out runs/bench_regime
    .venv/bin/python benchmarks/bench_regime.py --methods ovit --block-size 16 64 256 --out runs/bench_regime_B
    .venv/bin/python benchmarks/bench_regime.py --methods ovit --strategies sweep independent --out runs/bench_regime
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.results.parquet import append_rows, print_table, read_rows
from ovit_ray.orchestration.results.schemas import REGIME_BENCH
from ovit_ray.orchestration.results.stats import pairwise_table, summarize
from ovit_ray.orchestration.specs.run import GradualConfig, make_config
from ovit_ray.training.gradual import LocalReporter, run_gradual

KEY = ["strategy", "method", "block_size", "seed", "target_sparsity", "max_steps_per_epoch", "window_epochs"]


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
    p.add_argument("--out", default="runs/bench_regime")
    return p.parse_args(argv)


def run_strategy(config: GradualConfig, strategy: str, run_dir: Path) -> list[dict[str, Any]]:
    """Per-target rows of one seed: the single sweep run, or one independent run per target (its epochs
    are that run's own; the sweep's are the epochs spent so far in the one run)."""
    if strategy == "sweep":
        return list(run_gradual(config, config.schedule(), LocalReporter(run_dir))["targets"])
    return [
        run_gradual(config, config.independent_schedule(i), LocalReporter(run_dir / f"target{i}"))["targets"][
            0
        ]
        for i in range(len(config.targets))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    results = out / "results.parquet"
    done = (
        {tuple(r[k] for k in ("strategy", "method", "block_size", "seed")) for r in read_rows(results)}
        if results.exists()
        else set()
    )
    for strategy, method, block, seed in itertools.product(
        args.strategies, args.methods, args.block_size, args.seeds
    ):
        if (strategy, method, block, seed) in done:
            continue
        config = make_config(
            {
                "model": args.model,
                "method": method,
                "block_size": block,
                "seed": seed,
                "targets": args.targets,
                "window_epochs": args.window_epochs,
                "num_grads": args.num_grads,
                "max_steps_per_epoch": args.max_steps,
            }
        )
        began = time.perf_counter()
        targets = run_strategy(config, strategy, out / "runs" / f"{strategy}-{method}-B{block}-seed{seed}")
        seconds = time.perf_counter() - began
        rows = [
            {
                "strategy": strategy,
                "method": method,
                "block_size": block,
                "seed": seed,
                "max_steps_per_epoch": args.max_steps,
                "window_epochs": args.window_epochs,
                "seconds": seconds,
                **{k: t[k] for k in ("target_sparsity", "achieved_sparsity", "top1", "val_top1", "epochs")},
            }
            for t in targets
        ]
        append_rows(results, rows, KEY, REGIME_BENCH)
        print(
            f"{strategy} {method} B={block} seed {seed}: "
            + ", ".join(f"{r['target_sparsity']}: {r['top1']:.4f} ({r['epochs']} ep)" for r in rows)
            + f" ({seconds:.0f} s)",
            flush=True,
        )
    rows = [
        r
        for r in read_rows(results)
        if r["max_steps_per_epoch"] == args.max_steps
        and r["window_epochs"] == args.window_epochs
        and r["method"] in args.methods
        and r["block_size"] in args.block_size
        and r["strategy"] in args.strategies
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["method"], r["block_size"], r["target_sparsity"]), []).append(r)
    summary = [
        {
            "strategy": s,
            "method": m,
            "B": b,
            "target": t,
            "n": len(v),
            "test top-1 (%)": summarize([r["top1"] for r in v]).text(100),
            "epochs": summarize([r["epochs"] for r in v]).text(1),
        }
        for (s, m, b, t), v in sorted(groups.items())
    ]
    pairs = pairwise_table(rows, ["strategy", "method", "block_size"])
    print_table(summary, title="mean ± std over seeds")
    print_table(pairs, title="test top-1 a - b (pp), Welch 95% CI, * = excludes 0")
    knob = "strategy" if len(args.strategies) > 1 else "block_size" if len(args.block_size) > 1 else "methods"
    results.write_results(
        f"regime_{knob}",
        title=f"Gradual pruning with short recovery on {args.model}: {knob.replace('_', ' ')}",
        headline=[
            results.headline(
                f"{pair['a']} minus {pair['b']} at sparsity {pair['target_sparsity']}",
                pair["a - b, 95% CI"],
                "pp",
                f"test top-1 {pair['top1 a']} vs {pair['top1 b']}; n = {pair['n (a, b)']}; Welch 95%, * excludes 0",
            )
            for pair in [p for p in pairs if p["target_sparsity"] == max(args.targets)][:1]
        ],
        tables=[
            results.table_of_dicts("test top-1, mean ± std over seeds", summary),
            results.table_of_dicts("test top-1 a - b (pp), Welch 95% CI, * = excludes 0", pairs),
        ],
        notes=f"Gradual runs on the light single-process path to targets {args.targets} with "
        f"{args.window_epochs}-epoch windows of {args.max_steps} optimizer steps (m = {args.num_grads}), "
        f"seeds {args.seeds}; top-1 on the held-out test split, the checkpoint of each target picked on val.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
