"""`ovit-ray report SWEEP_DIR`: the results table of a sweep and its PNG plots."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="print a sweep's results table and write its plots",
                              description=__doc__)
    p.add_argument("sweep_dir", help="output directory of `ovit-ray sweep` (holds results.parquet)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.report import report

    for path in report(args.sweep_dir):
        print(f"plot: {path}")
    return 0
