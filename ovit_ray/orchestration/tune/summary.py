"""The end of a sweep: totals over its trials (loop and allocated hours, overall and per strategy), the best
finished trial by the one rule of `results.best`, the report's plots; all on the sweep's parent MLflow run,
which is then marked finished."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.kinds.sweep_file import Sweep
from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE
from ovit_ray.orchestration.results.best import RULE, best_trial
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tune.ledger import Ledger

__all__ = ["finish_sweep", "sweep_params", "sweep_totals"]

log = logging.getLogger(__name__)


def sweep_params(sweep: Sweep) -> dict[str, Any]:
    """Parent-run params: the kind, the search, and every value fixed for all trials that applies (no null)."""
    spec = sweep.spec(sweep.first_values())  # a fixed knob's first value is its value
    applied = {k: v for k, v in spec.applied().items() if k not in sweep.searched}
    search = sweep.file.search
    return {
        "kind": sweep.kind,
        "search.algorithm": search.algorithm,
        "search.trials": sweep.max_trials,
        "search.objective": ", ".join(f"{o.mode} {o.metric}" for o in search.objectives),
        **{
            f"search.{k}": f"{d.kind} {getattr(d, d.kind)}"
            for k, d in sweep.knobs.items()
            if d.kind != "fixed"
        },
        **applied,
    }


def sweep_totals(
    ledger: Ledger, group: str | None = None, specs: dict[str, Any] | None = None
) -> dict[str, float]:
    """Trials by status, epochs, loop and allocated hours over every trial of the ledger; with `group`
    (a knob such as `strategy`), the hours per value of it too (`<hours>.<value>`)."""
    totals: dict[str, float] = defaultdict(float)
    for trial_id, record in ledger.trials.items():
        totals[f"trials_{record.status}"] += 1
        objectives, held = ledger.objectives(trial_id), record.held_seconds / 3600
        totals["epochs_total"] += objectives.get("epochs_total", 0)
        hours = {
            "cpu_hours": objectives.get("cpu_hours", 0.0),
            "gpu_hours": objectives.get("gpu_hours", 0.0),
            "allocated_cpu_hours": held * record.cpus,
            "allocated_gpu_hours": held * record.gpus,
        }
        for unit, value in hours.items():
            totals[f"{unit}_total"] += value
            if group and specs and trial_id in specs:
                totals[f"{unit}.{getattr(specs[trial_id], group)}"] += value
    return dict(totals)


def finish_sweep(
    tracker: Tracker, parent: str, sweep: Sweep, out: Path, ledger: Ledger, specs: dict[str, Any]
) -> tuple[dict[str, float], dict[str, Any] | None, list[Path]]:
    """Parent run: totals, best trial (tags + best_config.json), plots; then marked finished."""
    from ovit_ray.orchestration.results.report import write_report_files

    group = "strategy" if "strategy" in sweep.experiment_kind().spec.model_fields else None
    totals = sweep_totals(ledger, group, specs)
    tracker.log_metrics(parent, totals, step=0)
    found, best = best_trial(out), None
    if found is not None:
        metric, entry = found
        config = {k: entry.get(k) for k in sweep.searched}
        best = {
            "trial_id": entry["trial_id"],
            "rule": RULE,
            "objective": metric,
            metric: entry.get(metric),
            "config": config,
        }
        (out / "best_config.json").write_text(json.dumps(best, indent=1, default=str))
        tracker.log_artifact(parent, out / "best_config.json")
        tracker.set_tags(
            parent, {"best.trial_id": best["trial_id"], **{f"best.{k}": str(v) for k, v in config.items()}}
        )
    plots = write_report_files(out) if (out / RESULTS_FILE).is_file() else []  # no target finished: no rows
    for plot in plots:
        tracker.log_artifact(parent, plot, "plots")
    publish_best(tracker, sweep, out)
    tracker.end_run(parent, "FINISHED")
    return totals, best, plots


def best_per_target(out: Path) -> dict[float | None, dict[str, Any]]:
    """The best finished row of each target: highest validation top-1, then test top-1, then the earliest."""
    trials = {t["trial_id"]: t for t in read_rows(out / TRIALS_FILE)} if (out / TRIALS_FILE).exists() else {}
    best: dict[float | None, dict[str, Any]] = {}
    for row in read_rows(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else []:
        if not row.get("kept_model") or trials.get(row["trial_id"], {}).get("status") != "finished":
            continue
        key = (row.get("val_top1") or 0.0, row["top1"])
        if row["target"] not in best or key > (
            best[row["target"]].get("val_top1") or 0.0,
            best[row["target"]]["top1"],
        ):
            best[row["target"]] = row
    return best


def publish_best(tracker: Tracker, sweep: Sweep, out: Path) -> None:
    """The best model of each target exported (`exported/<trial>-<target>.safetensors` and its card) and
    logged as an MLflow model in its trial's run, registered under `mlflow.register` when the file names
    one; a target already exported (a resumed sweep) is left as it is. A model that cannot be published is
    a warning: the sweep's results stand."""
    from ovit_ray.orchestration.train.export import export_model
    from ovit_ray.orchestration.train.publish import publish

    for target, row in best_per_target(out).items():
        name = f"{row['trial_id']}-{'final' if target is None else f'{target:g}'}.safetensors"
        path = out / "exported" / name
        if path.exists():
            continue
        try:
            card = export_model(out, path, trial=row["trial_id"], target=target)
            run_id = tracker.find_run({"ovit.trial_id": row["trial_id"], "ovit.sweep": sweep.name})
            if run_id is not None:
                publish(tracker, run_id, path, card, sweep.file.mlflow.register_name)
        except (ValueError, OSError, RuntimeError) as err:
            log.warning("the best model at target %s was not published: %s", target, str(err)[:200])
