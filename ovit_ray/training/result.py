"""The one result every kind of run reports: a finished target (a sparsity, a MACs budget, ...) of a trial.

Why one type: a per-target result used to change shape six times between the worker and Parquet (JSON
inside a Tune metric, `target_0.5000/top1` keys decoded by a regex, lists re-parsed from strings). A
`TargetResult` is made where the number is measured (the training loop, a structured prune, a transfer
run), travels as `asdict()` inside the trial's report, is rebuilt unchanged on the driver, and becomes one
Parquet row and one point of the MLflow series whose step is the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TargetResult"]


@dataclass(frozen=True)
class TargetResult:
    """One finished target of a trial. `top1` is always on the held-out test split; `val_top1` chose it.

    `kept_model` names the kept model: a file of the run's kept folder in the worker, its location relative
    to the output folder (or a storage URI) once the driver has it. Hours are the loop hours spent when the
    target closed. `extra` holds the kind's own columns (declared by the kind's result model).
    """

    target: float | None  # None: a kind whose trial has one result (a depth run)
    top1: float
    val_top1: float | None = None
    achieved_sparsity: float | None = None
    macs_ratio: float | None = None  # achieved MACs / the dense model's
    gmacs: float | None = None  # per image, multiply-adds counted once
    params: int | None = None  # parameters (non-zero ones for masked models)
    epochs_trained: int | None = None  # epochs trained when the target closed
    best_epoch: int | None = None
    kept_model: str | None = None
    cpu_hours: float | None = None
    gpu_hours: float | None = None
    latency_ms: float | None = None  # measured, batch 1 (median)
    speedup_latency: float | None = None  # measured against the dense model in the same loop
    speedup_throughput: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """Plain values for a report (what Tune and Ray Train carry)."""
        return asdict(self)

    @classmethod
    def from_payload(cls, values: Mapping[str, Any]) -> TargetResult:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"target result: unknown field(s) {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def columns(cls) -> list[str]:
        """The shared columns, in order (without `extra`)."""
        return [f.name for f in fields(cls) if f.name != "extra"]
