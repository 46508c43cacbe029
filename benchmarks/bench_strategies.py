"""Benchmark: sparsity sweep vs independent runs, and cyclic-linear vs cosine LR, on the digits preset.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_strategies.py --seeds 0 1 2 --out runs/bench-strategies
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_strategies.py --quick   # one seed, 2 steps per epoch

Two `gradual` sweeps through the one driver on Ray Tune (one trial at a time, so each trial's wall time is
its own): the strategy grid (`sweep`: one run through every target; `independent`: one run per target with
the sweep's epoch budget up to it) x seeds with the cyclic-linear LR, and the sweep strategy with the cosine
LR. Prints and records (mean ± std over seeds): per target the top-1 and epochs of each strategy; per
strategy the epochs and the CPU-hours, in the training loop and allocated (what a cluster bills: the trial's
CPUs x its wall time from placement to release, start-up included, issue 23.9); top-1 at the final target
per LR schedule; and every trial's orchestration overhead (its wall time minus the time inside its training
loop). Finished trials under --out are kept, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import results_file as results
from sweep_runs import Ran, Row, loop_seconds, parse_with_quick, results_folder, run_folder

from ovit_ray.orchestration.results.stats import summarize

STRATEGIES = ("sweep", "independent")
QUICK = {"seeds": [0], "targets": [0.5, 0.9], "window_epochs": 1, "max_steps_per_epoch": 2}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.6, 0.75, 0.9])
    p.add_argument("--window-epochs", type=int, default=2)
    p.add_argument("--max-steps-per-epoch", type=int, default=None)
    p.add_argument("--method", default="ovit")
    p.add_argument("--out", default="runs/bench-strategies", help="holds one folder per sweep")
    return parse_with_quick(p, argv, QUICK)


def gradual_sweep(args: argparse.Namespace, name: str, **fixed: Any) -> dict[str, Any]:
    """The strategy comparison's settings (B 32, m 32), `fixed` over them, one trial at a time on Tune."""
    params = {"strategy": {"grid": list(STRATEGIES)}} if "strategy" not in fixed else {}
    return {
        "name": name + ("_quick" if args.quick else ""),
        "model": "digits-vit",
        "seeds": list(dict.fromkeys(args.seeds)),
        "gradual": {
            "targets": args.targets,
            "window_epochs": args.window_epochs,
            "method": args.method,
            "block_size": 32,
            "num_grads": 32,
            "max_steps_per_epoch": args.max_steps_per_epoch,
            **fixed,
        },
        "search": {"params": params, "max_concurrent_trials": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "mlflow": {"experiment": "bench-strategies"},
    }


def stat(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    s = summarize([v * scale for v in values])
    return f"{s.mean:.{digits}f}" if s.n == 1 else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def per_target(rows: Sequence[Row], targets: Sequence[float]) -> list[list[Any]]:
    """Per target: top-1 (%) and epochs trained of each strategy, over seeds."""
    cells: dict[tuple[float, str], list[Row]] = defaultdict(list)
    for r in rows:
        cells[(r["target"], r["strategy"])].append(r)
    body = []
    for t in targets:
        sweep, independent = cells.get((t, "sweep"), []), cells.get((t, "independent"), [])
        body.append(
            [t]
            + [stat([r["top1"] for r in c], 100) if c else "-" for c in (sweep, independent)]
            + [stat([r["epochs_trained"] for r in c], 1, 1) if c else "-" for c in (sweep, independent)]
        )
    return body


def per_strategy(trials: Sequence[Row]) -> tuple[list[list[Any]], dict[str, dict[str, float]]]:
    """Per strategy, over seeds (one trial per seed): epochs, loop and allocated CPU-hours; and the means."""
    body, means = [], {}
    for s in STRATEGIES:
        own = [t for t in trials if t.get("strategy") == s and t["status"] == "finished"]
        if not own:
            continue
        keys = ("epochs_total", "cpu_hours", "allocated_cpu_hours")
        means[s] = {k: summarize([float(t[k] or 0.0) for t in own]).mean for k in keys}
        body.append(
            [s, len(own)]
            + [stat([float(t[k] or 0.0) for t in own], 1, d) for k, d in zip(keys, (1, 4, 4), strict=True)]
        )
    return body, means


def overheads(*sweeps: Ran) -> list[list[Any]]:
    """Every finished trial: its wall time (placement to release), its loop time, the difference."""
    body = []
    for ran in sweeps:
        for t in sorted(ran.trials, key=lambda t: (t.get("strategy") or "", t.get("seed") or 0)):
            if t["status"] == "finished":
                held, loop = float(t["trial_seconds"]), loop_seconds(t)
                name = f"{t['strategy']} {t['lr_schedule']} seed {t['seed']}"
                body.append([name, t["epochs_total"], round(held, 1), round(loop, 1), round(held - loop, 1)])
    return body


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    strategies = run_folder(gradual_sweep(args, "bench_strategies"), out / "strategies")
    cosine = run_folder(
        gradual_sweep(args, "bench_strategies_cosine", strategy="sweep", lr_schedule="cosine"), out / "cosine"
    )
    final = max(args.targets)
    targets = results.table(
        f"Sweep vs independent, digits-vit, {args.method}, window {args.window_epochs}, seeds {args.seeds}",
        ["target", "sweep top-1 (%)", "independent top-1 (%)", "sweep epochs so far", "independent epochs"],
        per_target(strategies.rows, args.targets),
    )
    spent_rows, means = per_strategy(strategies.trials)
    spent = results.table(
        "Per strategy, per seed: epochs and CPU-hours (in the training loop; allocated: start-up included)",
        ["strategy", "seeds", "epochs", "loop CPU-hours", "allocated CPU-hours"],
        spent_rows,
    )
    lr = results.table(
        f"LR schedule, test top-1 (%) at the final target {final} (sweep strategy)",
        ["schedule", "seeds", "top-1 (%)"],
        [
            [name, len(found), stat([r["top1"] for r in found], 100)]
            for name, found in (
                (
                    "cyclic_linear",
                    [r for r in strategies.rows if r["strategy"] == "sweep" and r["target"] == final],
                ),
                ("cosine", [r for r in cosine.rows if r["target"] == final]),
            )
            if found
        ],
    )
    overhead = results.table(
        "Orchestration overhead per trial (Ray Tune, one trial at a time): wall time minus time in the loop",
        ["trial", "epochs", "wall (s)", "in loop (s)", "overhead (s)"],
        overheads(strategies, cosine),
    )
    for t in (targets, spent, lr, overhead):
        print(f"\n### {t['title']}\n\n| " + " | ".join(t["columns"]) + " |\n|" + "---|" * len(t["columns"]))
        print("\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]))
    headline = []
    if len(means) == 2:
        s, i = means["sweep"], means["independent"]
        headline = [
            results.headline(
                "sweep / independent allocated CPU-hours, digits-vit",
                round(s["allocated_cpu_hours"] / i["allocated_cpu_hours"], 2),
                "x",
                f"epochs {s['epochs_total']:.0f} vs {i['epochs_total']:.0f}; loop CPU-hours "
                f"{s['cpu_hours']:.4f} vs {i['cpu_hours']:.4f}; mean over {len(args.seeds)} seeds",
            )
        ]
    results.write_results(
        "strategies",
        title="Sparsity sweep vs independent runs, and the LR schedule (gradual, digits-vit)",
        headline=headline,
        tables=[targets, spent, lr, overhead],
        notes=f"Two `gradual` sweeps on Ray Tune, one trial at a time: strategy sweep vs independent x seeds "
        f"{args.seeds} (cyclic-linear LR), and the sweep strategy with the cosine LR; targets {args.targets}, "
        f"{args.window_epochs}-epoch windows, B 32, m 32, {args.method}. Top-1 on the held-out test split at the "
        "best-on-val epoch of each target's window; sweep epochs at a target are those its one run had spent, an "
        "independent run's are its own. Allocated hours: the trial's CPUs x its wall time from placement to "
        "release; loop hours: inside the training loop only; overhead: the difference in seconds. Tune hands an "
        "ended trial's actor to the next (`reuse_actors`), so only a sweep's first trial pays the actor's start-up "
        "(Python, torch and timm imports): read one trial's overhead with its place in the order.",
        results_dir=results_folder(args.quick, out),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
