"""`ovit-ray` entry point: one sub-command per module, errors as one clear line and a non-zero exit.

Command modules import only light things at the top; `register` (pydantic models, the pruner's names)
runs only for the command being used, and torch, timm, Ray and MLflow are imported inside each
command's `run`: `ovit-ray --help` and `ovit-ray CMD --help` answer well under a second.

Exit codes: 0 done, 2 a user mistake (one line naming the thing and the value), 1 a command that
ran but reports a failure (e.g. failed trials), 130 / 143 stopped by Ctrl-C / SIGTERM, 70 an
internal error (one line with the path of a log holding the traceback; `--debug` prints it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
import traceback
from typing import NoReturn

from ovit_ray import __version__
from ovit_ray.orchestration.common.interrupts import Interrupted, StopSignals
from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.common.secrets import redact_argv, redact_text

DESCRIPTION = (
    "Second-order (oViT) pruning of vision transformers on Ray: one-shot pruning, gradual runs, "
    "sweeps tracked in MLflow and Parquet. `ovit-ray COMMAND --help` describes each command."
)
# Command name -> its module under `ovit_ray.cli`. Each module defines `HELP` (its line in `ovit-ray
# --help`) and `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = {
    "prune": "prune",
    "sweep": "sweep",
    "report": "report",
    "cluster": "cluster",
    "mlflow-server": "tracking.server",
    "sync-mlflow": "tracking.sync",
    "dashboard": "tracking.dashboard",
    "train": "train",
    "compare-strategies": "compare_strategies",
    "transfer": "transfer",
    "export": "model_files.export",
    "evaluate": "model_files.evaluate",
}
# Failures that mean the user asked for something impossible: a bad value, a missing, unreadable or
# unwritable file (OSError covers permissions, a directory where a file belongs, a full disk).
USER_ERRORS = (ValueError, OSError)
INTERNAL_ERROR = 70  # EX_SOFTWARE


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one error line too (argparse would print the usage block first); `-h` shows usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())[:500]}\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser of the command named in `argv` (others listed by name and HELP); None: all commands."""
    parser = OneLineParser(prog="ovit-ray", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"ovit-ray {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, where in COMMAND_MODULES.items():
        module = importlib.import_module(f"ovit_ray.cli.{where}")
        if chosen is None or name == chosen:
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=module.HELP)
    return parser


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def error_lines(err: BaseException, limit: int = 500, max_lines: int = 20) -> list[str]:
    """The message as short lines: one per problem the error lists (a sweep file reports each root
    cause on its own line), each shortened; an OSError as `strerror: filename`, without the errno.
    Credentials a message quotes (a storage URL with a password) are redacted."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    text = redact_text(text)
    lines = [_short(line, limit) for line in text.splitlines() if line.strip()] or [type(err).__name__]
    extra = len(lines) - max_lines
    return lines[:max_lines] + ([f"... and {extra} more problem(s)"] if extra > 0 else [])


def _write_crash_log(command: str) -> str:
    """The current traceback in a log file under the cache dir; its path (or why it could not be written).
    The command line and the traceback have their credentials redacted (a URL's password, `token=...`)."""
    try:
        from ovit_ray.models.checkpoint import cache_dir

        folder = cache_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}-{os.getpid()}.log"
        argv = " ".join(redact_argv(sys.argv))
        path.write_text(f"ovit-ray {__version__} {argv}\n{redact_text(traceback.format_exc())}")
        return str(path)
    except Exception as err:  # the log is a courtesy; never hide the original failure behind it
        return f"(no log written: {error_lines(err, 200)[0]}; rerun with --debug)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logger = logging.getLogger("ovit_ray")
    # progress and warnings on stderr (stdout stays the result: tables, CSV)
    level, handler = logger.level, show_logs("ovit-ray: ")
    try:
        return _run(args)
    finally:  # the library's logs reach users only while a command runs (main() may run many times)
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    """The command, with its outcome turned into an exit code and at most a few lines on stderr."""
    name = f"ovit-ray {args.command}"
    try:
        with StopSignals():
            return int(args.func(args) or 0)
    except Interrupted as stop:
        print(f"{name}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # a SIGINT outside the main thread's handler (e.g. before it was set)
        print(f"{name}: interrupted (Ctrl-C); finished results are kept", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        print("\n".join(f"{name}: error: {line}" for line in error_lines(err)), file=sys.stderr)
        return 2
    except Exception as err:
        if args.debug:
            raise
        log = _write_crash_log(args.command)
        print(
            f"{name}: internal error ({type(err).__name__}: {error_lines(err, 200)[0]}); traceback in {log}",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
