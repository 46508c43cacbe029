"""`ovit-ray train`: one gradual-pruning run as a Ray Train job, from a YAML file and/or flags."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ovit_ray.pruning.methods import method_names

if TYPE_CHECKING:
    from ovit_ray.orchestration.specs.run import GradualConfig
    from ovit_ray.orchestration.train.job import RunResult

TABLE_COLUMNS = [
    "strategy",
    "target_sparsity",
    "achieved_sparsity",
    "top1",
    "val_top1",
    "epochs",
    "cpu_hours",
    "gpu_hours",
]


# What each config field means, for `--help`; the allowed values are read from the field's type.
FIELD_HELP = {
    "model": "preset (digits-vit) or timm model name",
    "checkpoint": "starting weights, .safetensors or .pt",
    "dataset": "digits, lfw, imagefolder or cifar10 (default: the preset's)",
    "data_root": "directory of an imagefolder or cifar10 dataset",
    "split_seed": "seed of the fixed train/val split",
    "method": "pruning method",
    "block_size": "Fisher block size B",
    "num_grads": "gradients per Fisher m",
    "damp": "absolute dampening lambda of the Fisher",
    "grad_batch_size": "images per gradient",
    "pattern": "N:M semi-structured masks, e.g. 2:4",
    "scope": "one threshold over all layers (global) or per layer (uniform)",
    "patterns": "regular expressions of the weight names to prune (default: every attention and MLP projection)",
    "dtype": "precision of the pruner's elimination",
    "fisher_dtype": "precision of the Fisher sums and their inverse",
    "init_sparsity": "sparsity of the first pruning step's start",
    "final_sparsity": "last sparsity, without --targets",
    "start_epoch": "epoch of the first pruning step",
    "end_epoch": "epoch of the last pruning step, without --targets",
    "update_frequency": "epochs between pruning steps",
    "interpolation": "how sparsity rises between steps",
    "targets": "target sparsities, each in [0, 1): a sparsity sweep with a fine-tune window at each",
    "window_epochs": "fine-tune epochs at each target (the best epoch is kept)",
    "steps_per_target": "pruning steps to reach each target",
    "lr_schedule": "cyclic_linear restarts at lr_max after every pruning step",
    "lr_max": "peak learning rate",
    "lr_min": "lowest learning rate, <= lr_max",
    "warmup_epochs": "linear warmup epochs",
    "batch_size": "global training batch size (split over the workers)",
    "eval_batch_size": "evaluation batch size per worker",
    "max_steps_per_epoch": "cap on optimizer steps per epoch (default: the whole train split)",
    "weight_decay": "AdamW weight decay",
    "label_smoothing": "label smoothing of the loss",
    "augment": "training augmentation",
    "distill_weight": "weight of distillation from the dense model (0: off)",
    "distill_temperature": "distillation temperature",
    "distill_teacher": "teacher: start (the starting weights), model (the model's dense weights, e.g. the trained "
    "preset, for a pruned or shrunk --checkpoint) or a checkpoint path",
    "seed": "seed of initialisation, sampling and pruning",
    "workers": "Ray Train workers (DDP)",
    "cpus_per_worker": "CPUs each worker holds",
    "gpus_per_worker": "GPUs each worker holds (0: CPU only)",
    "max_failures": "worker failures a run survives (it resumes from its last checkpoint)",
    "out": "output directory (results.parquet, mlflow.db, checkpoints)",
    "mlflow_uri": "MLflow tracking URI (default: SQLite inside --out)",
    "experiment": "MLflow experiment name",
    "ray_address": "join a running Ray cluster (default: a private local instance)",
}
_BOUNDS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}"}


HELP = "one gradual-pruning run (Ray Train, MLflow, Parquet)"  # listed by `ovit-ray --help`


def _flag_type(annotation: Any) -> tuple[Any, bool]:
    """(argparse type, is a list) for a config field; values are validated by pydantic afterwards."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if typing.get_origin(annotation) in (list, tuple):
        return _flag_type(typing.get_args(annotation)[0])[0], True
    return (annotation if annotation in (int, float) else str), False


def _allowed(name: str) -> str:
    """'int > 0', 'float >= 0, < 1', ... from the field's type and bounds (Literal choices argparse shows)."""
    from ovit_ray.orchestration.specs.run import GradualConfig

    info = GradualConfig.model_fields[name]
    kind, many = _flag_type(info.annotation)
    bounds = [
        text.format(getattr(m, key))
        for m in info.metadata
        for key, text in _BOUNDS.items()
        if hasattr(m, key)
    ]
    words = "numbers" if many else {int: "int", float: "float"}.get(kind, "")
    return f"{words} {', '.join(bounds)}".strip()


def _choices(name: str, annotation: Any) -> tuple[str, ...] | None:
    """The values argparse offers: a Literal's, or the registered pruning methods."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    return method_names() if name == "method" else None


def add_config_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """A positional CONFIG.yaml plus one `--field-name` flag per config field (flags win over the file)."""
    from ovit_ray.orchestration.specs.run import GradualConfig  # pydantic: only when this command is used

    parser.add_argument("config", nargs="?", help="YAML file of config fields (optional; flags override it)")
    for name, info in GradualConfig.model_fields.items():
        kind, many = _flag_type(info.annotation)
        choices = _choices(name, info.annotation)
        default = (defaults or {}).get(name, info.default)
        allowed = "" if choices or not _allowed(name) else f"; {_allowed(name)}"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            nargs="+" if many else None,
            choices=choices,
            default=None,
            metavar=None if choices else name.upper(),
            help=f"{FIELD_HELP[name]}{allowed}" + ("" if default is None else f" (default: {default})"),
        )
    parser.set_defaults(config_defaults=defaults or {})


def config_from_args(args: argparse.Namespace) -> GradualConfig:
    from ovit_ray.orchestration.specs.run import GradualConfig, load_config

    overrides = {name: getattr(args, name) for name in GradualConfig.model_fields}
    if args.config is None:
        overrides = {**args.config_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    return load_config(args.config, overrides)


def print_run(result: RunResult) -> None:
    s = result.summary
    state = "already finished; stored result reused" if result.reused else "finished"
    print(
        f"{result.run_name} ({result.strategy}): {state}: {s['total_epochs']} epochs, "
        f"{s['cpu_hours']:.4f} CPU-h, {s['gpu_hours']:.4f} GPU-h, wall {s['wall_seconds']:.0f} s "
        f"(Ray overhead {s['overhead_seconds']:.0f} s)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help=HELP, description=__doc__)
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    # The flags are valid: now Ray, torch and the datasets (~0.9 GB, seconds), not for a bad value.
    from ovit_ray.orchestration.results import RESULTS_FILE
    from ovit_ray.orchestration.results.parquet import append_rows, print_table
    from ovit_ray.orchestration.results.schemas import RUN_RESULTS
    from ovit_ray.orchestration.train.job import KEY_COLUMNS, run_training

    schedule = config.schedule()
    print(
        f"gradual run ({config.strategy}): steps {list(schedule.steps)}, windows {list(schedule.windows)}, "
        f"{config.workers} worker(s); out {config.out}"
    )
    result = run_training(config)
    added = append_rows(Path(config.out) / RESULTS_FILE, result.rows, KEY_COLUMNS, RUN_RESULTS)
    print_run(result)
    print_table(result.rows, TABLE_COLUMNS, title=f"gradual pruning of {config.model}")
    print(f"{added} new row(s) -> {Path(config.out) / RESULTS_FILE}")
    return 0
