"""Short names of knobs and their values: MLflow run names (`B64-m128-λ1e-7-cyclic_linear`) and report
headers, read from the knobs' declarations (`ovit_ray.knobs`: each knob's `label`).

Why short: a run name or a column of an 80-column table has room for a few characters per knob, and the
paper's symbols (B, m, λ) are what a reader of pruning results looks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ovit_ray.knobs import knob_infos, short_value

__all__ = ["CORE", "display_value", "run_label", "short_value"]

# The pruner's knobs lead a run name when the trial has them: they are what a reader compares.
CORE = ("block_size", "num_grads", "damp")
# Values shortened in run names (a name has room for a few characters per knob).
SHORT_VALUES = {
    "cyclic_linear": "cyclic",
    "independent": "indep",
    "attention-first": "af",
    "activation-first": "vf",
}


def display_value(value: Any) -> str:
    """A knob value in a run name or a table cell: a path by its file name, long choices shortened."""
    text = Path(value).stem if isinstance(value, str) and "/" in value else short_value(value)
    return SHORT_VALUES.get(text, text)


def run_label(spec: type[BaseModel], values: Mapping[str, Any], searched: Iterable[str]) -> str:
    """`B64-m128-λ1e-7-cosine`: the pruner's knobs (if the kind has them), then every other searched knob,
    each after its declared label (`damp` -> `λ`, else its name)."""
    infos = knob_infos(spec)
    names = [k for k in CORE if k in infos] + [k for k in searched if k not in CORE]
    parts = []
    for knob in names:
        value = values.get(knob)
        if value is None:
            continue
        info = infos.get(knob)
        label = info.label if info is not None else knob
        path = isinstance(value, str) and "/" in value  # named by its file name alone
        bare = path or (info is not None and info.scalar is str and info.choices is not None)
        parts.append(("" if bare else label) + display_value(value))
    return "-".join(parts)
