"""`ovit-ray report DIR`: one row per trial, best first (80 columns; --wide, --csv, --markdown), and PNG plots."""

from __future__ import annotations

import argparse
import sys
import textwrap

HELP = "print the trials table of an output folder and write its plots"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help=HELP, description=__doc__)
    p.add_argument(
        "sweep_dir",
        metavar="DIR",
        help="output directory of `ovit-ray sweep`, `train` or `compare-strategies` (holds results.parquet)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--wide", action="store_true", help="one line per trial however wide (default: wrap to 80)"
    )
    shape.add_argument(
        "--csv",
        action="store_const",
        const="csv",
        dest="fmt",
        help="CSV with full column names, for spreadsheets",
    )
    shape.add_argument(
        "--markdown",
        action="store_const",
        const="markdown",
        dest="fmt",
        help="a markdown table, for notes and pull requests",
    )
    p.add_argument(
        "--with",
        dest="others",
        nargs="+",
        default=[],
        metavar="DIR",
        help="more output folders (any kind) whose timed rows join the frontier plot and table",
    )
    p.set_defaults(func=run, fmt="text")


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.results.report import report
    from ovit_ray.orchestration.results.table import plain_table

    width = None if args.wide else 80
    result = report(args.sweep_dir, fmt=args.fmt, width=width, others=args.others)
    print(result.text, end="")
    for title, rows in result.tables:
        print()
        print(plain_table(rows, title, width), end="")
    if result.plots:  # CSV/markdown go to stdout alone, so they can be redirected into a file
        names = ", ".join(p.stem for p in result.plots)
        text = f"plots in {result.plots[0].parent}: {names}"
        if width and len(text) > width:  # how many, and their folder (their names are the files')
            text = textwrap.fill(f"{len(result.plots)} plots (PNG) in {result.plots[0].parent}", width)
        print(text, file=sys.stderr if args.fmt != "text" else sys.stdout)
    return 0
