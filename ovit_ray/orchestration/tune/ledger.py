"""What the driver knows of each trial: its targets as they arrive, its last epoch, its clock, how it ended.

Objectives are computed here, from the targets the trial delivered, not inside the trial: one rule for every
kind and host, and a trial resumed by a new driver process gets the targets of its earlier attempts back
from `results.parquet` (`Ledger.load`). The searcher reads its objective from here when a trial completes.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ovit_ray.training.result import TargetResult

__all__ = ["Ledger", "TrialRecord"]


@dataclass
class TrialRecord:
    trial_id: str
    targets: list[TargetResult] = field(default_factory=list)
    epoch: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics
    epoch_reports: int = 0
    started: float | None = None  # time.time() of the current attempt's placement
    held_seconds: float = 0.0  # wall time of earlier attempts, placement to release
    loop: dict[str, float] = field(default_factory=dict)  # the trial's own totals (epochs, loop hours)
    status: str = "running"
    cpus: float = 0.0  # what the trial holds while placed (allocated hours = held seconds x these)
    gpus: float = 0.0


class Ledger:
    """Trial records by id, on the driver only (never pickled with Tune's state)."""

    def __init__(self) -> None:
        self.trials: dict[str, TrialRecord] = {}

    def __getitem__(self, trial_id: str) -> TrialRecord:
        if trial_id not in self.trials:
            self.trials[trial_id] = TrialRecord(trial_id)
        return self.trials[trial_id]

    def load(self, rows: Iterable[Mapping[str, Any]], trials: Iterable[Mapping[str, Any]]) -> None:
        """Targets and ended trials already on disk (a resumed or extended sweep)."""
        columns = set(TargetResult.columns())
        for row in rows:
            self[row["trial_id"]].targets.append(
                TargetResult(**{k: v for k, v in row.items() if k in columns})
            )
        for trial in trials:
            record = self[trial["trial_id"]]
            record.status = str(trial["status"])
            record.held_seconds = float(trial.get("trial_seconds") or 0.0)
            hours = record.held_seconds / 3600
            if hours:
                record.cpus = float(trial.get("allocated_cpu_hours") or 0.0) / hours
                record.gpus = float(trial.get("allocated_gpu_hours") or 0.0) / hours

    def objectives(self, trial_id: str) -> dict[str, Any]:
        """The objectives of a trial's delivered targets (`*_final`: the last one, in report order) and its
        totals; empty values are left out."""
        record = self[trial_id]
        done = record.targets
        out: dict[str, Any] = {"targets_done": len(done)}
        if done:
            out["top1_final"], out["top1_mean"] = done[-1].top1, statistics.fmean(t.top1 for t in done)
            vals = [t.val_top1 for t in done if t.val_top1 is not None]
            if len(vals) == len(done):
                out["val_top1_final"], out["val_top1_mean"] = vals[-1], statistics.fmean(vals)
        trained = [t.epochs_trained for t in done if t.epochs_trained is not None]
        epochs = record.loop.get("epochs_total", record.epoch.get("epochs_done", max(trained, default=None)))
        out["epochs_total"] = None if epochs is None else int(epochs)
        for unit in ("cpu_hours", "gpu_hours"):
            out[unit] = record.loop.get(unit, record.epoch.get(unit))
        return {k: v for k, v in out.items() if v is not None}
