"""Checks of a sweep that need no Ray: what `--dry-run` runs and what a sweep runs before Ray starts.

A sweep file can be valid YAML with valid types and still name a model timm does not know, a checkpoint or
data folder that is not there, or a depth plan deeper than the model: without these checks every trial would
fail the same way, after Ray started. Torch and timm are imported only when a value needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.yaml_files import short_repr
from ovit_ray.orchestration.kinds.sweep_file import Sweep

__all__ = ["check_sweep", "preflight_problems"]

ROOT_DATASETS = ("imagefolder", "cifar10")  # read from --data-root; nothing is downloaded
MAX_CHECKED_POINTS = 100  # grid points whose specs the kind checks against the model


def _values(sweep: Sweep, field: str) -> list[Any]:
    """Every value `field` takes in the sweep (its base, or each value of its knob)."""
    if field in sweep.knobs:
        return list(dict.fromkeys(sweep.knobs[field].values_to_check()))
    default = sweep.experiment_kind().spec.model_fields.get(field)
    return [sweep.base().get(field, default.default if default is not None else None)]


def _data_problems(sweep: Sweep) -> list[str]:
    """One line per missing model, checkpoint, teacher, dataset or data folder."""
    from ovit_ray.models import PRESETS

    problems = []
    for model in _values(sweep, "model"):
        if model is None or model in PRESETS:
            continue
        import timm

        if not timm.is_model(str(model)):
            problems.append(
                f"model: unknown model {short_repr(model)} (not a preset: {', '.join(PRESETS)}; not a timm architecture)"
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


def preflight_problems(sweep: Sweep) -> list[str]:
    """Data problems first (they make every other check moot), then what the kind finds in each grid
    point's spec (sampled knobs at their first value), then in each value a sampled knob can take (a
    choice, the ends of a range) with the first grid point: a depth of `randint: [1, 8]` on 4 blocks."""
    problems = _data_problems(sweep)
    if problems:
        return problems
    kind = sweep.experiment_kind()
    first = sweep.first_values()
    points = sweep.grid_points()[:MAX_CHECKED_POINTS]
    specs = [{**first, **point} for point in points]
    for name, dist in sweep.knobs.items():
        if dist.kind not in ("grid", "fixed"):
            specs += [{**specs[0], name: value} for value in dist.values_to_check()[1:]]
    seen: list[str] = []
    for knobs in specs:
        for problem in kind.problems(sweep.spec(knobs)):
            if problem not in seen:
                seen.append(problem)
    return seen


def check_sweep(sweep: Sweep) -> None:
    """`ValueError` with one line per problem, each naming the sweep file and where the key is set."""
    from ovit_ray.orchestration.kinds.sweep_file import SHARED

    problems = preflight_problems(sweep)
    if problems:
        where = [
            p if p.split(":")[0] in SHARED and p.split(":")[0] not in sweep.section else f"{sweep.kind}.{p}"
            for p in problems
        ]
        raise ValueError("\n".join(f"{sweep.path}: {p}" for p in where))
