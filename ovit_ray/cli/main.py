"""`ovit-ray` entry point: one sub-command per module, errors as one clear line and a non-zero exit.

Command modules import only light things at the top (argparse, pydantic, the pruner's names): torch,
timm, Ray and MLflow are imported inside each command's `run`, so `--help` answers in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ovit_ray import __version__

# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = ("prune", "sweep", "report", "cluster", "mlflow-server", "sync-mlflow", "train",
                   "compare-strategies", "transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ovit-ray", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ovit-ray {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(f"ovit_ray.cli.{module.replace('-', '_')}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"ovit-ray {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ovit-ray {args.command}: interrupted; finished results are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
