"""MLflow and Parquet for a sweep, written from the Tune driver only.

One parent run per sweep (found again by its key on resume) and one nested child run per trial, all
written by this process through `Tracker` (MlflowClient, explicit ids): trials never touch MLflow, so
a local SQLite store works for trials on other nodes too, and nothing leaks an experiment into workers.
Per-target rows go to `results.parquet` when a trial completes, keyed so a resume never adds them twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS, TRAINING_ITERATION

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import SWEEP_RESULTS, SWEEP_TRIALS
from ovit_ray.orchestration.specs.knob_labels import run_label
from ovit_ray.orchestration.specs.run import GradualConfig
from ovit_ray.orchestration.specs.sweep import SweepConfig
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.kept_models import log_best_checkpoints
from ovit_ray.orchestration.tune.trial import PROGRESS_KEYS, ROWS_KEY, TRIAL_COMPLETE

TRIALS_FILE = "trials.parquet"
KEY_COLUMNS = ["trial_id", "strategy", "target_sparsity"]
TRIAL_METRICS = (
    "top1_final",
    "top1_mean",
    "val_top1_final",
    "val_top1_mean",
    "epochs_total",
    "cpu_hours",
    "gpu_hours",
    "loop_seconds",
    "trial_seconds",
    "overhead_seconds",
)
# Per-target top-1 as one series per metric with step = sparsity in %: MLflow's chart view then draws each
# trial's top-1 vs sparsity curve (and overlays trials). One key per target (`target_0.5000/top1`, as the
# trial reports them) would make a section of single-point charts per target: those stay in Parquet only.
FRONTIER_METRIC = "top1_vs_sparsity"
PRUNED_TAG = "pruned"
_NOT_LOGGED = set(AUTO_RESULT_KEYS) | {"epoch", "run_index", "done", TRIAL_COMPLETE}
_TARGET_KEY = re.compile(r"target_([0-9.]+)/(.+)")
_FRONTIER = {"top1": FRONTIER_METRIC, "val_top1": f"val_{FRONTIER_METRIC}"}


def trial_knobs(config: GradualConfig, strategy: str) -> dict[str, Any]:
    """Every value of a trial's gradual run (train base, resources, knobs): its Parquet knob columns."""
    return {**config.computed_values(), "strategy": strategy}


def trial_params(config: GradualConfig, strategy: str) -> dict[str, Any]:
    """A child run's MLflow params: only the values its run used, no None (see `GradualConfig.used_values`)."""
    return {**config.used_values(), "strategy": strategy}


def frontier_points(metrics: Mapping[str, Any]) -> dict[int, dict[str, float]]:
    """{round(target * 100): {series: value}} of the targets whose window closed in this report."""
    points: dict[int, dict[str, float]] = {}
    for key, value in metrics.items():
        match = _TARGET_KEY.fullmatch(key)
        if match and match.group(2) in _FRONTIER:
            points.setdefault(round(float(match.group(1)) * 100), {})[_FRONTIER[match.group(2)]] = float(
                value
            )
    return points


def _trial_totals(result: Mapping[str, Any]) -> dict[str, Any]:
    """A finished trial's objectives and compute, named as in the Parquet schemas."""
    return {f"trial_{k}" if k in ("cpu_hours", "gpu_hours") else k: result[k] for k in TRIAL_METRICS}


def sweep_params(sweep: SweepConfig) -> dict[str, Any]:
    """Parent-run params: the resolved sweep, one dotted key per setting."""
    blob = sweep.model_dump(mode="json", exclude={"space", "description"})
    blob["space"] = {k: {d.kind: getattr(d, d.kind)} for k, d in sweep.knobs.items()}
    return blob


class SweepTracking(Callback):
    """Child run per trial (per-epoch metrics, final metrics, status) and Parquet rows per target and trial."""

    def __init__(
        self,
        out: Path,
        experiment: str,
        uri: str | None,
        parent_id: str,
        sweep_id: str,
        sweep: SweepConfig,
        fixed: Mapping[str, Any],
    ) -> None:
        self.out, self.experiment, self.uri = out, experiment, uri
        self.parent_id, self.sweep_id, self.sweep, self.fixed = parent_id, sweep_id, sweep, dict(fixed)
        self.results = out / RESULTS_FILE
        self._tracker: Tracker | None = None
        self._children: dict[str, str] = {}
        self._ended: set[str] = set()
        self._configs: dict[str, tuple[GradualConfig, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its run config (callbacks included) for `Tuner.restore`: keep plain values only."""
        return {**self.__dict__, "_tracker": None, "_children": {}, "_ended": set(), "_configs": {}}

    def _run(self, trial: Trial) -> tuple[GradualConfig, str]:
        """The trial's validated run and strategy, built once per trial on the driver."""
        if trial.trial_id not in self._configs:
            knobs = {**self.fixed, **trial.config}
            self._configs[trial.trial_id] = (self.sweep.trial_config(knobs), knobs["strategy"])
        return self._configs[trial.trial_id]

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.out, self.experiment, self.uri)
        return self._tracker

    def _child(self, trial: Trial) -> str:
        if trial.trial_id not in self._children:
            params = trial_params(*self._run(trial))
            searched = [k for k, d in self.sweep.knobs.items() if d.kind != "fixed"]
            self._children[trial.trial_id] = self.tracker.start_run(
                run_label(params, searched) or trial.trial_id,
                params,
                {"ovit.trial_id": trial.trial_id, "ovit.sweep": self.sweep.name},
                parent_run_id=self.parent_id,
                run_key=f"{self.sweep_id}-{trial.trial_id}",
            )
        return self._children[trial.trial_id]

    def _end(self, trial: Trial, status: str) -> None:
        self.tracker.end_run(self._child(trial), status)
        self._ended.add(trial.trial_id)

    def end_open_children(self, status: str = "KILLED") -> None:
        """Child runs of trials still running when the sweep stopped (interrupted): not left RUNNING."""
        for trial_id, run_id in self._children.items():
            if trial_id not in self._ended:
                self.tracker.end_run(run_id, status)
                self._ended.add(trial_id)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        skip = _NOT_LOGGED | (
            set(PROGRESS_KEYS) - set(TRIAL_METRICS) if result.get(TRIAL_COMPLETE) else set()
        )
        numeric = {
            k: v
            for k, v in result.items()
            if k not in skip
            and not _TARGET_KEY.fullmatch(k)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        }
        child = self._child(trial)
        self.tracker.log_metrics(child, numeric, step=int(result.get(TRAINING_ITERATION, 0)))
        for step, series in frontier_points(result).items():
            self.tracker.log_metrics(child, series, step=step)

    def _trial_row(self, trial: Trial, status: str) -> None:
        """The trial's row in trials.parquet however it ended; stopped and failed ones carry what they spent."""
        result = trial.last_result or {}
        totals = (
            _trial_totals(result)
            if status == "finished"
            else {
                "epochs_total": result.get("epochs_done"),
                "trial_cpu_hours": result.get("cpu_hours"),
                "trial_gpu_hours": result.get("gpu_hours"),
            }
        )
        row = {
            "trial_id": trial.trial_id,
            "sweep": self.sweep.name,
            "status": status,
            **trial_knobs(*self._run(trial)),
            "top1_last": result.get("top1"),
            "sparsity_last": result.get("sparsity"),
            **totals,
        }
        append_rows(self.out / TRIALS_FILE, [row], ["trial_id"], SWEEP_TRIALS)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        result = trial.last_result or {}
        child = self._child(trial)
        if not result.get(TRIAL_COMPLETE):
            # Stopped by ASHA: a normal end of a search, not a kill; the tag tells it from a full run.
            self._trial_row(trial, "stopped_early")
            self.tracker.set_tags(child, {PRUNED_TAG: "true", "ovit.stopped_early": "true"})
            self._end(trial, "FINISHED")
            return
        base = {
            "trial_id": trial.trial_id,
            "sweep": self.sweep.name,
            **trial_knobs(*self._run(trial)),
            **_trial_totals(result),
        }
        rows = [{**base, **row} for row in json.loads(result[ROWS_KEY])]
        append_rows(self.results, rows, KEY_COLUMNS, SWEEP_RESULTS)
        self._trial_row(trial, "finished")
        self.tracker.set_tags(child, {PRUNED_TAG: "false"})
        log_best_checkpoints(
            self.tracker, child, [(r["target_sparsity"], r["best_checkpoint"]) for r in rows]
        )
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trial_row(trial, "failed")
        self._end(trial, "FAILED")
