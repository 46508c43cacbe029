"""The one writer of a sweep: every trial event becomes Parquet rows, MLflow runs and metrics, and a line of
the display, on the driver only (trials never touch MLflow, so a local SQLite store works for trials on
other nodes too). Tune's callback (`TuneEvents`) and the in-process executor feed the same methods.

MLflow layout: one run per trial, named by its knobs (`B32-m16-λ3.4e-8`), with params only for knobs that
apply (no `null`), per-epoch metrics, and the results as one series per metric whose step is the target in %
(`top1_vs_sparsity`), plus one run for the sweep (its totals, best trial and plots). Trials are not nested
under the sweep's run: MLflow folds nested runs away, and its chart view draws only the runs the table
shows, so a plain link now shows every trial and overlays their top-1 vs sparsity curves; the tags
`ovit.sweep` / `ovit.sweep_run` tie them to their sweep (MLflow's "Group by" groups them). A trial stopped
early ends FINISHED, renamed `stopped: <name>` and tagged `ovit.status=stopped_early`, so it stands apart.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.kinds.sweep_file import Sweep
from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import results_schema, trials_schema
from ovit_ray.orchestration.specs.labels import run_label
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tune.display import Display
from ovit_ray.orchestration.tune.ledger import Ledger
from ovit_ray.training.result import TargetResult

__all__ = ["SweepWriter", "portable"]

RESULT_KEY = ["trial_id", "target"]
STATUS_TAG = "ovit.status"
_SERIES = ("top1", "val_top1")
# measured at each target, logged under their own names at the target's step (the frontier's other axes)
_MEASURED = (
    "achieved_sparsity",
    "macs_ratio",
    "gmacs",
    "latency_ms",
    "speedup_latency",
    "speedup_throughput",
)
_STEPS = {"epoch", "epochs_done"}  # the step itself: as metrics they would only draw a diagonal


def _numbers(values: Mapping[str, Any], skip: Container[str] = ()) -> dict[str, float]:
    """The real numbers among `values` (a bool is not one) as floats, for MLflow; `skip`: keys left out."""
    real = {k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {k: float(v) for k, v in real.items() if k not in skip}


def portable(location: str | None, out: Path) -> str | None:
    """A kept file's location as stored in the folder: relative to it when inside, else as it is (a
    storage URI, or a path on shared storage), so a copied or moved folder reads its own files."""
    if location is None or "://" in location:
        return location
    path = Path(location)
    return str(path.relative_to(out)) if path.is_absolute() and path.is_relative_to(out) else location


class SweepWriter:
    """Parquet, MLflow and the display for one sweep run (one driver process)."""

    def __init__(
        self,
        sweep: Sweep,
        out: Path,
        tracker: Tracker,
        parent_run: str,
        sweep_id: str,
        ledger: Ledger,
        display: Display,
        resources: tuple[float, float],
    ) -> None:
        self.sweep, self.out, self.tracker, self.parent_run = sweep, out, tracker, parent_run
        self.sweep_id, self.ledger, self.display = sweep_id, ledger, display
        self.resources = resources  # (CPUs, GPUs) a trial holds, for its allocated hours
        self.kind = sweep.experiment_kind()
        self.results = results_schema(self.kind)
        self.trials_file = trials_schema(self.kind)
        self.specs: dict[str, Any] = {}
        self._runs: dict[str, str] = {}

    # -- per trial ------------------------------------------------------------------------------
    def spec(self, trial_id: str, knobs: Mapping[str, Any]) -> Any:
        """The trial's validated spec, built once per trial on the driver (`knobs`: Tune's config)."""
        if trial_id not in self.specs:
            self.specs[trial_id] = self.sweep.spec(knobs)
        return self.specs[trial_id]

    def _label(self, trial_id: str) -> str:
        return run_label(self.kind.spec, self.specs[trial_id].applied(), self.sweep.searched) or trial_id

    def _run(self, trial_id: str, knobs: Mapping[str, Any]) -> str:
        if trial_id not in self._runs:
            spec = self.spec(trial_id, knobs)
            self._runs[trial_id] = self.tracker.start_run(
                self._label(trial_id),
                spec.applied(),
                {
                    "ovit.trial_id": trial_id,
                    "ovit.sweep": self.sweep.name,
                    "ovit.sweep_run": self.parent_run,
                    "ovit.kind": self.kind.name,
                    "ovit.role": "trial",
                },
                run_key=f"{self.sweep_id}-{trial_id}",
            )
        return self._runs[trial_id]

    def started(self, trial_id: str, knobs: Mapping[str, Any], started: float) -> None:
        record = self.ledger[trial_id]
        record.started, record.status = started, "running"
        record.cpus, record.gpus = self.resources
        self._run(trial_id, knobs)
        self.display.trial_started(trial_id, self._label(trial_id))

    def result(self, trial_id: str, knobs: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        """One report of a trial: an epoch's metrics, a finished target, or its own totals at the end."""
        record, run = self.ledger[trial_id], self._run(trial_id, knobs)
        if "epoch" in payload:
            metrics = payload["epoch"]
            record.epoch, record.epoch_reports = dict(metrics), record.epoch_reports + 1
            self.tracker.log_metrics(run, _numbers(metrics, _STEPS), step=record.epoch_reports)
            self.display.epoch(trial_id, int(metrics.get("epoch", 0)))
        if payload.get("target"):
            self._target(trial_id, knobs, TargetResult.from_payload(payload["target"]))
        if payload.get("progress"):
            self.display.progress(trial_id, str(payload["progress"]))
        if payload.get("done"):
            record.loop = dict(payload["done"])

    def _target(self, trial_id: str, knobs: Mapping[str, Any], result: TargetResult) -> None:
        record, spec = self.ledger[trial_id], self.spec(trial_id, knobs)
        if any(t.target == result.target for t in record.targets):
            return  # a resumed trial repeating a target it had delivered
        extra = self.kind.result.model_validate(result.extra).model_dump(mode="json")
        stored = TargetResult(
            **{**result.payload(), "kept_model": portable(result.kept_model, self.out), "extra": {}}
        )
        record.targets.append(stored)
        row = {
            "sweep": self.sweep.name,
            "kind": self.kind.name,
            "trial_id": trial_id,
            **{c: getattr(stored, c) for c in TargetResult.columns()},
            **extra,
            **spec.model_dump(mode="json"),
        }
        append_rows(self.out / RESULTS_FILE, [row], RESULT_KEY, self.results)
        if result.target is not None:
            name = self.kind.target_name
            series = {f"{k}_vs_{name}": getattr(result, k) for k in _SERIES if getattr(result, k) is not None}
            series |= {k: getattr(result, k) for k in _MEASURED if getattr(result, k) is not None}
            series |= _numbers(extra)  # the kind's own numbers (a transfer's source_top1), at the same step
            self.tracker.log_metrics(self._run(trial_id, knobs), series, step=round(100 * result.target))
        self.display.target(trial_id, result.target, result.top1, result.val_top1)

    def ended(
        self, trial_id: str, knobs: Mapping[str, Any], status: str, ended: float, error: str = ""
    ) -> None:
        """The trial's row in trials.parquet however it ended, its MLflow run closed and marked."""
        record, spec, run = self.ledger[trial_id], self.spec(trial_id, knobs), self._run(trial_id, knobs)
        record.held_seconds += ended - (record.started or ended)
        record.started, record.status = None, status
        totals = self.ledger.objectives(trial_id)
        if status != "finished":  # a partial trial's "final" top-1 is not the objective it was run for
            totals = {k: v for k, v in totals.items() if "top1" not in k}
        cpus, gpus = record.cpus or self.resources[0], record.gpus or self.resources[1]
        hours = record.held_seconds / 3600
        totals.update(
            allocated_cpu_hours=hours * cpus,
            allocated_gpu_hours=hours * gpus,
            trial_seconds=record.held_seconds,
        )
        row = {
            "sweep": self.sweep.name,
            "kind": self.kind.name,
            "trial_id": trial_id,
            "status": status,
            "error": error or None,
            **totals,
            **spec.model_dump(mode="json"),
        }
        append_rows(self.out / TRIALS_FILE, [row], ["trial_id"], self.trials_file, replace=True)
        self.tracker.log_metrics(run, {k: float(v) for k, v in totals.items()}, step=0)
        tags = {STATUS_TAG: status, "pruned": str(status == "stopped_early").lower()}
        if status == "stopped_early":
            tags["mlflow.runName"] = f"stopped: {self._label(trial_id)}"
        self.tracker.set_tags(run, tags)
        self.tracker.end_run(run, {"failed": "FAILED", "interrupted": "KILLED"}.get(status, "FINISHED"))
        metric = self.sweep.file.search.objectives[0].metric
        self.display.trial_ended(trial_id, status, totals.get(metric), record.held_seconds, error)

    def interrupted(self, ended: float) -> None:
        """Trials still running when the sweep stopped: `interrupted` in trials.parquet (with the time they
        held, which a resume adds to) and their runs KILLED."""
        for trial_id, record in list(self.ledger.trials.items()):
            if record.status == "running" and trial_id in self.specs:
                self.ended(trial_id, {}, "interrupted", ended)
