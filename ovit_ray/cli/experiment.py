"""What the commands that run an experiment share (`train`, `compare-strategies`, `transfer`, `prune`): one
flag per knob, read from the knobs' declarations, and a sweep built from the flags and run by the one driver,
into an output folder that a second run of the same command resumes instead of overwriting."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["add_knob_flags", "add_run_flags", "as_flags", "knob_values", "run_command"]

RESOURCES = ("workers", "cpus_per_worker", "gpus_per_worker")


def add_knob_flags(
    parser: argparse.ArgumentParser,
    spec: type,
    *,
    skip: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """`--field-name` for every knob of `spec` (type, choices and help text from its declaration)."""
    from ovit_ray.knobs import knob_infos

    for name, info in knob_infos(spec).items():
        if name in skip:
            continue
        shown = dict(defaults or {}).get(name, info.default)
        text = (
            info.describe()
            if shown == info.default
            else f"{info.describe().split(' (default:')[0]} (default here: {shown})"
        )
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=info.scalar if info.scalar in (int, float) else str,
            nargs="+" if info.many else None,
            choices=info.choices,
            default=None,
            metavar=None if info.choices else name.upper(),
            help=text.replace("%", "%%"),
        )


def add_run_flags(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--out", default=out, help=f"output folder (default: {out}); a second run resumes it")
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: SQLite inside --out)")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument(
        "--address", help="join a running Ray cluster: auto or HOST:PORT (default: an embedded one)"
    )
    parser.add_argument("--verbose", action="store_true", help="show Ray's, Tune's and Train's output live")


def knob_values(
    args: argparse.Namespace, spec: type[BaseModel], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The knobs given as flags (over `defaults`), by name."""
    values = dict(defaults or {})
    values.update({k: getattr(args, k) for k in spec.model_fields if getattr(args, k, None) is not None})
    return values


def as_flags(message: str, name: str, kind: str, flags: Mapping[str, str]) -> str:
    """A sweep's error line as the command's user typed it: `ovit-ray NAME: KIND.knob.0: ...` becomes
    `--knob: ...` (or the command's own flag for the knob, `flags`), so the line names the flag and value."""
    line = message.removeprefix(f"ovit-ray {name}: ").removeprefix(
        f"{kind} (with the first value of each knob): "
    )
    match = re.match(rf"(?:{re.escape(kind)}\.|search\.params\.|resources\.)?([a-z_]+)(?:\.\d+)*: ", line)
    if match is None:
        return line
    knob = match.group(1)
    flag = flags.get(knob, f"--{knob.replace('_', '-')}")
    return f"{flag}: {line[match.end() :]}"


def run_command(
    args: argparse.Namespace,
    kind: str,
    name: str,
    values: Mapping[str, Any],
    *,
    params: Mapping[str, Any] | None = None,
    experiment: str,
    local: bool = False,
    flags: Mapping[str, str] | None = None,
    show: Callable[[Path], str] | None = None,
) -> int:
    """Build the command's sweep (`values` fixed, with resources and seeds; `params` as grids), run it into
    `--out`, then print its results (`show`, default the report) if any target finished. The same command
    again resumes (finished trials are kept); a knob's error names the flag that set it (`as_flags`; `flags`:
    knobs whose flag is not `--knob-name`)."""
    from ovit_ray.cli.sweep import execute
    from ovit_ray.orchestration.kinds.sweep_file import SHARED, sweep_from
    from ovit_ray.orchestration.results import RESULTS_FILE
    from ovit_ray.orchestration.results.report import report
    from ovit_ray.orchestration.tune.folder import read_state

    values = dict(values)
    shared = {k: values.pop(k) for k in SHARED if k in values}
    resources = {k: values.pop(k) for k in RESOURCES if k in values}
    seeds = values.pop("seeds", None) or [values.pop("seed", 0)]
    values.pop("seed", None)
    raw = {  # the sweep file the command stands for: `values` fixed, `params` as grids
        "name": name,
        **shared,
        "seeds": list(seeds),
        kind: values,
        "search": {"algorithm": "grid", "params": {k: {"grid": list(v)} for k, v in (params or {}).items()}},
        "resources": {**resources, "local": local},
        "mlflow": {"experiment": experiment},
    }
    out = Path(args.out)
    try:
        sweep = sweep_from(raw, f"ovit-ray {name}")
        state = read_state(out.resolve()) if out.is_dir() else None
        if state is not None and state.get("fingerprint") != sweep.fingerprint():
            raise ValueError(
                f"--out: {out} holds the results of another `ovit-ray {args.command}` (other knobs or "
                "methods); finished results are never overwritten: choose another --out"
            )
        args.resume = state is not None
        code = execute(args, sweep, out)
    except ValueError as err:
        raise ValueError(as_flags(str(err), name, kind, flags or {})) from None
    if (out / RESULTS_FILE).is_file():
        text = show(out) if show else report(out).text
        print(text, end="" if text.endswith("\n") else "\n")
    return code
