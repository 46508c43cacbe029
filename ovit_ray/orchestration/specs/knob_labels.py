"""Short labels of knobs and their values: MLflow run names (`B64-m128-λ1e-7-cyclic`) and report headers.

Why short: a run name or a column of an 80-column table has room for a few characters per knob, and the
paper's symbols (B, m, λ) are what a reader of pruning results looks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Knob -> short name (report headers and run-name prefixes).
SHORT = {
    "block_size": "B",
    "num_grads": "m",
    "damp": "λ",
    "grad_batch_size": "gb",
    "lr_schedule": "sched",
    "lr_max": "lr",
    "lr_min": "lr_min",
    "warmup_epochs": "warm",
    "weight_decay": "wd",
    "label_smoothing": "ls",
    "distill_weight": "kd",
    "distill_temperature": "kdT",
    "distill_teacher": "teacher",
    "window_epochs": "win",
    "steps_per_target": "steps",
    "update_frequency": "freq",
    "interpolation": "interp",
    "batch_size": "bs",
    "strategy": "strat",
    "method": "method",
    "seed": "seed",
    "split_seed": "split",
    "init_sparsity": "s0",
    "augment": "aug",
}
# Values shortened in run names and tables.
SHORT_VALUES = {"cyclic_linear": "cyclic", "cosine": "cos", "constant": "const", "independent": "indep"}
# Knobs whose value alone says what it is in a run name (no prefix): `cyclic`, `ovit`, `sweep`.
BARE = {"lr_schedule", "method", "strategy", "interpolation", "augment", "scope"}
# The pruner's knobs always appear in a run name, searched or not: they are what a reader compares.
CORE = ("block_size", "num_grads", "damp")


def short_name(knob: str) -> str:
    return SHORT.get(knob, knob)


def short_value(value: Any) -> str:
    """`1e-07` -> `1e-7`, `0.000512` -> `5.1e-4`, 0.05 -> `0.05`, 64 -> `64`, `cyclic_linear` -> `cyclic`."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e4:
            return f"{value:.2g}"
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return SHORT_VALUES.get(str(value), str(value))


def run_label(values: Mapping[str, Any], searched: Iterable[str]) -> str:
    """`B64-m128-λ1e-7-cyclic`: the pruner's knobs, then every other searched knob, in a stable order."""
    names = list(CORE) + [k for k in searched if k not in CORE]
    parts = []
    for knob in names:
        if knob not in values:
            continue
        prefix = "" if knob in BARE else short_name(knob)
        parts.append(f"{prefix}{short_value(values[knob])}")
    return "-".join(parts)
