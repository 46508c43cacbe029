"""`ovit-ray sweep FILE`: run a sweep file (Ray Tune + Optuna over gradual-pruning runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "run a sweep file: Ray Tune + Optuna over gradual pruning runs"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sweep", help=HELP, description=__doc__)
    p.add_argument("file", help="sweep file, e.g. sweeps/quickstart.yaml")
    p.add_argument("--out", help="output directory (default: runs/sweeps/<sweep name>)")
    p.add_argument(
        "--address", help="join a running Ray cluster: auto or HOST:PORT (default: start an embedded one)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the sweep in --out; finished trials are kept"
    )
    p.add_argument(
        "--mlflow-uri", help="MLflow tracking URI (default: the sweep's, else SQLite inside --out)"
    )
    p.add_argument(
        "--add-trials",
        type=int,
        default=0,
        metavar="N",
        help="extend the finished sweep in --out by N trials (Optuna continues its stored study)",
    )
    p.add_argument(
        "--optuna-storage",
        metavar="URI",
        help="Optuna study storage (default: sqlite:///<out>/optuna.db; open with optuna-dashboard)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved trials and resources; start nothing"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.specs.sweep_file import load_sweep
    from ovit_ray.orchestration.structured.sweep_file import is_structured_file
    from ovit_ray.orchestration.transfer.sweep_file import is_transfer_file
    from ovit_ray.orchestration.tune.plan import describe, make_plan
    from ovit_ray.orchestration.tune.sweep import run_sweep

    if is_transfer_file(args.file):
        return _run_transfer(args)
    if is_structured_file(args.file):
        return _run_structured(args)
    sweep = load_sweep(args.file)
    out = Path(args.out or f"runs/sweeps/{sweep.name}")
    if args.dry_run:  # every check that needs no Ray; reads only
        from ovit_ray.orchestration.tune.output_folder import check_folder
        from ovit_ray.orchestration.tune.preflight import check_sweep

        check_sweep(args.file, sweep)
        check_folder(out.resolve(), sweep.name, sweep.fingerprint(), args.resume)
        plan = make_plan(sweep, float(os.cpu_count() or 1), 0.0, strict=False)
        print("\n".join(describe(plan, out.resolve(), args.mlflow_uri)))
        if not args.address:
            print(f"(concurrency estimated for this machine: {os.cpu_count()} CPU, GPUs not probed)")
        return 0
    outcome = run_sweep(
        args.file,
        out,
        address=args.address,
        resume=args.resume,
        mlflow_uri=args.mlflow_uri,
        add_trials=args.add_trials,
        optuna_storage=args.optuna_storage,
    )
    t = outcome.totals
    print(
        f"sweep {sweep.name}: {t['trials_finished']:.0f} finished, {t['trials_stopped_early']:.0f} stopped early, "
        f"{t['trials_failed']:.0f} failed; {t['epochs_total']:.0f} epochs, {t['cpu_hours_total']:.3f} CPU-h, "
        f"{t['gpu_hours_total']:.3f} GPU-h"
    )
    if outcome.best is not None:
        print(f"best: {outcome.best}")
    print(
        f"results: {outcome.out / 'results.parquet'}; plots: {outcome.out / 'plots'}; "
        f"`ovit-ray report {outcome.out}` prints the table"
    )
    return 0 if t["trials_failed"] == 0 else 1


def _run_transfer(args: argparse.Namespace) -> int:
    """A file with a `transfer:` section: pruned sources first, then the transfer grid."""
    from ovit_ray.cli.transfer import TABLE_COLUMNS
    from ovit_ray.orchestration.results.parquet import print_table
    from ovit_ray.orchestration.transfer.sweep_file import load_transfer_sweep, run_transfer_sweep

    sweep = load_transfer_sweep(args.file)
    out = Path(args.out or f"runs/sweeps/{sweep.name}")
    stage = sweep.transfer
    if args.dry_run:
        print(
            f"transfer sweep {sweep.name}: sources {stage.source.methods} x seeds {stage.source.seeds} per pair "
            f"{[(p.source_model, p.dataset) for p in stage.pairs]}; modes {stage.modes}; seeds {stage.seeds}; "
            f"{stage.epochs} epochs -> {out}"
        )
        return 0
    rows = run_transfer_sweep(args.file, out, mlflow_uri=args.mlflow_uri)
    print_table(
        rows, [c for c in TABLE_COLUMNS if rows and c in rows[0]], title=f"transfer sweep {sweep.name}"
    )
    print(f"results: {out / 'results.parquet'}")
    return 0


def _run_structured(args: argparse.Namespace) -> int:
    """A file with a `structured:` section: score once, then every budget x method x seed as a Tune trial."""
    from ovit_ray.orchestration.structured.sweep_file import load_structured_sweep

    sweep = load_structured_sweep(args.file)
    out = Path(args.out or f"runs/sweeps/{sweep.name}")
    grid = sweep.structured
    unstructured = len(grid.unstructured.sparsities) if grid.unstructured else 0
    points = (len(grid.methods) * len(sweep.points) + unstructured) * len(grid.seeds)
    if args.dry_run:
        print(
            f"structured sweep {sweep.name}: {grid.model}, methods {grid.methods} x {len(sweep.points)} budget "
            f"point(s) x seeds {grid.seeds}, plus {unstructured} unstructured point(s) per seed: {points} trials "
            f"({grid.max_concurrent_trials} at a time) -> {out}"
        )
        return 0
    from ovit_ray.orchestration.structured.grid import run_structured_sweep

    def show(row: dict) -> None:
        print(
            f"  {row['run_key']}: test top-1 {100 * row['top1']:.2f}%, MACs {row['achieved_flops_ratio']:.2f}, "
            f"throughput x{row.get('speedup_throughput') or float('nan'):.2f}",
            flush=True,
        )

    rows = run_structured_sweep(args.file, out, mlflow_uri=args.mlflow_uri, progress=show)
    print(f"structured sweep {sweep.name}: {len(rows)} row(s) -> {out / 'results.parquet'}")
    print(f"frontier plot: {out / 'plots' / 'frontier.png'}; `ovit-ray report {out}` prints the table")
    return 0
