"""`ovit-ray` entry point: one sub-command per module, errors as one clear line and a non-zero exit.

Command modules import only light things at the top; `register` (pydantic models, the pruner's names)
runs only for the command being used, and torch, timm, Ray and MLflow are imported inside each
command's `run`: `ovit-ray --help` and `ovit-ray CMD --help` answer well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ovit_ray import __version__

DESCRIPTION = ("Second-order (oViT) pruning of vision transformers on Ray: one-shot pruning, gradual runs, "
               "sweeps tracked in MLflow and Parquet. `ovit-ray COMMAND --help` describes each command.")
# Each module defines `HELP` (its line in `ovit-ray --help`) and `register(subparsers)`, which adds its
# parser and sets `func(args) -> int`.
COMMAND_MODULES = ("prune", "sweep", "report", "cluster", "mlflow-server", "sync-mlflow", "train",
                   "compare-strategies", "transfer")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser of the command named in `argv` (others listed by name and HELP); None: all commands."""
    parser = argparse.ArgumentParser(prog="ovit-ray", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ovit-ray {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"ovit_ray.cli.{name.replace('-', '_')}")
        if chosen is None or name == chosen:
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=getattr(module, "HELP", None) or module.__doc__.splitlines()[0])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
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
