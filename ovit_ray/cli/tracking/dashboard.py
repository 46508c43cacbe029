"""`ovit-ray dashboard OUT`: optuna-dashboard on 127.0.0.1 over the sweep folder's Optuna study (named
objectives; each trial's top-1 at every target as its curve). Needs `pip install 'ovit-ray[dashboard]'`."""

from __future__ import annotations

import argparse

HELP = "optuna-dashboard over a sweep folder's study (on 127.0.0.1)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dashboard", help=HELP, description=__doc__)
    p.add_argument("folder", metavar="OUT", help="output folder of an Optuna sweep")
    p.add_argument("--port", type=int, default=8080, help="TCP port, 1-65535 (default: 8080)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.tracking.dashboard import Dashboard

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: must be a TCP port in 1-65535, got {args.port}")
    dashboard = Dashboard(args.folder, args.port)
    try:  # Ctrl-C / SIGTERM raise here (cli.main's StopSignals): the dashboard never outlives us
        dashboard.start()
        print(
            f"optuna-dashboard at {dashboard.url} (study of {dashboard.folder}); Ctrl-C stops it", flush=True
        )
        return dashboard.wait()
    finally:
        dashboard.stop()
