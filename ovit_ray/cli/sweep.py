"""`ovit-ray sweep FILE [FILE ...]`: run sweep files, any kind of experiment, through the one driver (Ray Tune
with grid, random or Optuna search; `resources.local` runs a grid in this process)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "run sweep files (every kind: gradual, structured, depth, transfer, oneshot, ...)"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.orchestration.kinds import get_kind, kind_names

    kinds = "; ".join(f"{name}: {get_kind(name).summary}" for name in kind_names())
    p = subparsers.add_parser("sweep", help=HELP, description=f"{__doc__} Kinds: {kinds}.")
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="sweep file(s), e.g. sweeps/quickstart.yaml; several run in order",
    )
    p.add_argument(
        "--out", help="output folder (default: runs/sweeps/<sweep name>; with several files, <out>/<name>)"
    )
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
        help="extend the finished sweep in --out by N trials (Optuna continues its study)",
    )
    p.add_argument(
        "--optuna-storage", metavar="URI", help="Optuna study storage (default: sqlite:///<out>/optuna.db)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved trials and resources; start nothing"
    )
    add_display_flags(p)
    p.set_defaults(func=run)


def add_display_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show Ray's, Tune's and Train's output live (default: in <out>/sweep.log)",
    )


def out_folder(args: argparse.Namespace, name: str, several: bool) -> Path:
    if args.out is None:
        return Path("runs/sweeps") / name
    return Path(args.out) / name if several else Path(args.out)


def run(args: argparse.Namespace) -> int:
    """Each file is loaded (checked) right before it runs: a later file may read what an earlier one made
    (a transfer sweep's sources); a failed sweep stops the ones after it."""
    from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep

    several = len(args.files) > 1
    parent = (
        Path(args.out) if args.out and several else Path(args.out).parent if args.out else Path("runs/sweeps")
    )
    if args.dry_run:
        sweeps = [load_sweep(path, parent) for path in args.files]
        return dry_run(args, [(s, out_folder(args, s.name, several)) for s in sweeps])
    for path in args.files:
        read_yaml_mapping(path, "sweep file")  # every file readable before the first runs
    for path in args.files:
        sweep = load_sweep(path, parent)
        code = execute(args, sweep, out_folder(args, sweep.name, several), Path(path).read_text())
        if code:
            return code
    return 0


def dry_run(args: argparse.Namespace, sweeps: list) -> int:
    """Every check that needs no Ray, reading only (remote Tune storage is not opened)."""
    from ovit_ray.orchestration.common.bounds import check_add_trials
    from ovit_ray.orchestration.common.ray_session import check_ray_address
    from ovit_ray.orchestration.common.stores import default_tracking_uri
    from ovit_ray.orchestration.tune.folder import check_folder, check_stores
    from ovit_ray.orchestration.tune.plan import describe, make_plan, storage_root
    from ovit_ray.orchestration.tune.preflight import check_sweep

    check_add_trials(args.add_trials)
    if args.address:
        check_ray_address(args.address)
    resume = args.resume or args.add_trials > 0
    for sweep, out in sweeps:
        check_sweep(sweep)
        state = check_folder(out.resolve(), sweep.name, sweep.fingerprint(), resume)
        storage = None if sweep.file.resources.local else storage_root(sweep, out.resolve())
        local = storage if storage is not None and "://" not in storage else None
        check_stores(out.resolve(), state, local, args.optuna_storage, resume)
        plan = make_plan(sweep, float(os.cpu_count() or 1), 0.0, strict=False)
        print("\n".join(describe(plan, out.resolve(), args.mlflow_uri, default_tracking_uri(out))))
    if not args.address:
        print(f"(concurrency estimated for this machine: {os.cpu_count()} CPU, GPUs not probed)")
    return 0


def execute(args: argparse.Namespace, sweep: object, out: Path, source_text: str | None = None) -> int:
    """Run one sweep and print its outcome; exit code 1 when a trial failed (never 0 for an incomplete sweep)."""
    from ovit_ray.orchestration.tune.driver import run_sweep

    outcome = run_sweep(
        sweep,  # type: ignore[arg-type]
        out,
        address=getattr(args, "address", None),
        resume=getattr(args, "resume", False),
        mlflow_uri=getattr(args, "mlflow_uri", None),
        add_trials=getattr(args, "add_trials", 0),
        optuna_storage=getattr(args, "optuna_storage", None),
        verbose=args.verbose,
        source_text=source_text,
    )
    t, c = outcome.totals, outcome.counts
    unit = "gpu" if t.get("allocated_gpu_hours_total") else "cpu"
    print(
        f"{c['finished']} finished, {c['stopped_early']} stopped early, {c['failed']} failed; "
        f"{t.get('epochs_total', 0):.0f} epochs; {unit.upper()}-h {t.get(f'{unit}_hours_total', 0):.3f} "
        f"({t.get(f'allocated_{unit}_hours_total', 0):.3f} held)"
    )
    if outcome.best is not None:
        b = outcome.best
        print(f"best: trial {b['trial_id']} ({b['objective']} {b[b['objective']]:.4f})")
    print(f"results: {outcome.out / 'results.parquet'}")
    print(f"table and plots: ovit-ray report {outcome.out}")
    if c["failed"]:
        print(
            f"{c['failed']} trial(s) failed: see trials.parquet (`error`) and {outcome.log or 'the output above'}"
        )
    return 1 if c["failed"] else 0
