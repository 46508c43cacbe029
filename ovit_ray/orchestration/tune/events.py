"""Tune's side of the writer: trial events from Tune's callback API to `SweepWriter`, on the driver.

Tune pickles its callbacks with the experiment state (for `Tuner.restore`): the writer (MLflow client,
display) stays out of the pickle; a restored sweep gets a new callback (`common.ray_private.restore_tuner`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from ovit_ray.orchestration.tune.hosts import OVIT, TRIAL_COMPLETE
from ovit_ray.orchestration.tune.writer import SweepWriter

__all__ = ["TuneEvents"]


def _error_line(trial: Trial) -> str:
    """The last line of a failed trial's traceback (its exception and message), for trials.parquet."""
    try:
        lines = [line for line in Path(trial.error_file or "").read_text().splitlines() if line.strip()]
    except OSError:
        return "failed"
    return lines[-1][:300] if lines else "failed"


class TuneEvents(Callback):
    """Trial start, results, completion and errors, forwarded to the writer with the trial's knobs."""

    def __init__(self, writer: SweepWriter, fixed: Mapping[str, Any]) -> None:
        self.writer: SweepWriter | None = writer
        self.fixed = dict(fixed)

    def __getstate__(self) -> dict[str, Any]:
        return {"writer": None, "fixed": self.fixed}

    def _knobs(self, trial: Trial) -> dict[str, Any]:
        return {**self.fixed, **trial.config}

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.writer is not None:
            self.writer.started(trial.trial_id, self._knobs(trial), time.time())

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        if self.writer is not None and result.get(OVIT):
            self.writer.result(trial.trial_id, self._knobs(trial), result[OVIT])

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.writer is not None:
            status = "finished" if (trial.last_result or {}).get(TRIAL_COMPLETE) else "stopped_early"
            self.writer.ended(trial.trial_id, self._knobs(trial), status, time.time())

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if self.writer is not None:
            self.writer.ended(trial.trial_id, self._knobs(trial), "failed", time.time(), _error_line(trial))
