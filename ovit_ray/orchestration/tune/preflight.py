"""Checks of a sweep that need no Ray: what `--dry-run` runs and what a sweep runs before Ray starts.

A sweep file can be valid YAML with valid types and still name a model timm does not know, a
checkpoint or data folder that is not there: without these checks every trial would fail the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.yaml_files import short_repr
from ovit_ray.orchestration.specs.sweep import SweepConfig

ROOT_DATASETS = ("imagefolder", "cifar10")  # read from --data-root; nothing is downloaded


def _values(sweep: SweepConfig, field: str, default: Any = None) -> list[Any]:
    """Every value `field` takes in the sweep (its train base, or each value of its knob)."""
    if field in sweep.knobs:
        return list(dict.fromkeys(sweep.knobs[field].values_to_check()))
    return [sweep.base.get(field, default)]


def preflight_problems(sweep: SweepConfig) -> list[str]:
    """One line per missing model, checkpoint, dataset or data folder (timm and the dataset table
    import torch, ~0.8 GB: only when the sweep names a timm model or a dataset)."""
    from ovit_ray.models import PRESETS

    problems = []
    for model in _values(sweep, "model", "digits-vit"):
        if model in PRESETS:
            continue
        import timm

        if not timm.is_model(str(model)):
            problems.append(
                f"model: unknown model {short_repr(model)} (not a preset: {', '.join(PRESETS)}; "
                "not a timm architecture)"
            )
    for checkpoint in _values(sweep, "checkpoint"):
        if checkpoint is not None and not Path(str(checkpoint)).expanduser().is_file():
            problems.append(f"checkpoint: no such file {short_repr(checkpoint)}")
    for teacher in _values(sweep, "distill_teacher"):
        if teacher not in (None, "start", "model") and not Path(str(teacher)).expanduser().is_file():
            problems.append(f"distill_teacher: not start, model nor a file: {short_repr(teacher)}")
    for dataset in _values(sweep, "dataset"):
        if dataset is None:
            continue
        from ovit_ray.data.datasets import DATASET_NAMES

        if dataset not in DATASET_NAMES:
            problems.append(
                f"dataset: unknown dataset {short_repr(dataset)}; valid: {', '.join(DATASET_NAMES)}"
            )
        if dataset in ROOT_DATASETS:
            for root in _values(sweep, "data_root"):
                if root is None or not Path(str(root)).expanduser().is_dir():
                    problems.append(
                        f"data_root: dataset {dataset} needs an existing folder, got {short_repr(root)}"
                    )
    return problems


def check_sweep(path: str | Path, sweep: SweepConfig) -> None:
    """`ValueError` with one line per problem, each naming the sweep file."""
    problems = preflight_problems(sweep)
    if problems:
        raise ValueError("\n".join(f"{path}: train.{p}" for p in problems))
