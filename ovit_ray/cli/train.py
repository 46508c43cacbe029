"""`ovit-ray train`: one gradual-pruning run as a Ray Train job, from a YAML file and/or flags."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.config import GradualConfig, load_config
from ovit_ray.orchestration.results import append_rows, print_table
from ovit_ray.orchestration.strategies import RESULTS_FILE
from ovit_ray.orchestration.train_job import KEY_COLUMNS, RunResult, run_training

TABLE_COLUMNS = ["strategy", "target_sparsity", "achieved_sparsity", "top1", "val_top1", "epochs", "cpu_hours", "gpu_hours"]


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(argparse type, is a list) for a config field; values are validated by pydantic afterwards."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if typing.get_origin(annotation) is list:
        return _flag_type(typing.get_args(annotation)[0])[0], True
    return (annotation if annotation in (int, float) else str), False


def add_config_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """A positional CONFIG.yaml plus one `--field-name` flag per config field (flags win over the file)."""
    parser.add_argument("config", nargs="?", help="YAML file of config fields (optional)")
    for name, info in GradualConfig.model_fields.items():
        kind, many = _flag_type(info.annotation)
        default = (defaults or {}).get(name, info.default)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, nargs="+" if many else None,
                            default=None, metavar=name.upper(), help=f"(default: {default})")
    parser.set_defaults(config_defaults=defaults or {})


def config_from_args(args: argparse.Namespace) -> GradualConfig:
    overrides = {name: getattr(args, name) for name in GradualConfig.model_fields}
    if args.config is None:
        overrides = {**args.config_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    return load_config(args.config, overrides)


def print_run(result: RunResult) -> None:
    s = result.summary
    state = "already finished; stored result reused" if result.reused else "finished"
    print(f"{result.run_name} ({result.strategy}): {state}: {s['total_epochs']} epochs, "
          f"{s['cpu_hours']:.4f} CPU-h, {s['gpu_hours']:.4f} GPU-h, wall {s['wall_seconds']:.0f} s "
          f"(Ray overhead {s['overhead_seconds']:.0f} s)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="one gradual-pruning run (Ray Train, MLflow, Parquet)",
                              description=__doc__)
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    print(f"gradual run ({config.strategy}): steps {config.schedule()[0]}, windows {config.schedule()[1]}, "
          f"{config.workers} worker(s); out {config.out}")
    result = run_training(config)
    added = append_rows(Path(config.out) / RESULTS_FILE, result.rows, KEY_COLUMNS)
    print_run(result)
    print_table(result.rows, TABLE_COLUMNS, title=f"gradual pruning of {config.model}")
    print(f"{added} new row(s) -> {Path(config.out) / RESULTS_FILE}")
    return 0
