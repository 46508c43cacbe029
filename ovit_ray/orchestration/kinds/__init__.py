"""Experiment kinds as plug-ins, one module each, registered by name like timm's models and our pruning methods.

A kind declares its typed trial spec (every knob, `ovit_ray.knobs`), the result columns it adds, and how one
trial runs (`ExperimentKind.run`, the one abstract method); the sweep-file dialect, the CLI, the Parquet
schema, the MLflow layout, the report and the README's kinds table come from the registry. A new kind is a
module with a `@register_kind` subclass of `ExperimentKind`, plus its name in `_BUILT_IN` below, or any
module of yours imported before the sweep runs (a sweep file's `imports:` does that). Kind modules import
torch only inside `run`, so listing and validating stay fast.
"""

from __future__ import annotations

import importlib

from ovit_ray.orchestration.kinds._registry import get_kind, kind_names, register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host, NoExtra, TrainLoop

__all__ = ["ExperimentKind", "Host", "NoExtra", "TrainLoop", "get_kind", "kind_names", "register_kind"]

_BUILT_IN = ("gradual", "oneshot", "structured", "depth", "transfer")
for _module in _BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
