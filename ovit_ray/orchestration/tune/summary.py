"""The end of a sweep: totals over its trials, the best finished trial by the one rule of
`results.best`, plots; all on the sweep's parent MLflow run, which is then marked finished."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import ResultGrid

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.best import RULE, best_finished
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.specs.sweep import SweepConfig
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tune.trial import TRIAL_COMPLETE


def sweep_totals(trials: Sequence[tuple[Mapping[str, Any], bool]]) -> dict[str, float]:
    """Parent-run totals over (last result, errored) of every trial: finished, stopped early or failed."""
    totals = dict.fromkeys(
        (
            "trials_finished",
            "trials_stopped_early",
            "trials_failed",
            "gpu_hours_total",
            "cpu_hours_total",
            "epochs_total",
        ),
        0.0,
    )
    for metrics, errored in trials:
        complete = bool(metrics.get(TRIAL_COMPLETE))
        status = "trials_failed" if errored else "trials_finished" if complete else "trials_stopped_early"
        totals[status] += 1
        totals["gpu_hours_total"] += metrics.get("gpu_hours", 0.0)
        totals["cpu_hours_total"] += metrics.get("cpu_hours", 0.0)
        totals["epochs_total"] += (
            metrics.get("epochs_total", 0) if complete else metrics.get("epochs_done", 0)
        )
    return totals


def best_of_rows(sweep: SweepConfig, out: Path) -> dict[str, Any] | None:
    """Knobs and objectives of the best finished trial by `best_trial.RULE` (None if none finished)."""
    found = best_finished(out)
    if found is None:
        return None
    _, entry = found
    config = {
        k: json.loads(v) if isinstance(v, str) and v.startswith("[") else v
        for k, v in entry.items()
        if k in sweep.knobs
    }
    return {
        "trial_id": entry["trial_id"],
        "rule": RULE,
        "config": config,
        **{o.metric: entry.get(o.metric) for o in sweep.search.objectives},
    }


def finish_sweep(
    tracker: Tracker,
    parent: str,
    sweep: SweepConfig,
    grid: ResultGrid,
    out: Path,
    earlier: Iterable[Mapping[str, float]] = (),
) -> tuple[dict[str, float], dict[str, Any] | None, list[Path]]:
    """Parent run: totals (plus `earlier` experiments' of an extended sweep), best config (tags +
    best_config.json), plots; then mark it finished."""
    from ovit_ray.orchestration.results.report import write_report_files

    # ResultGrid iterates through __getitem__/__len__, which its annotations do not declare
    totals = sweep_totals([(r.metrics or {}, r.error is not None) for r in grid])  # type: ignore[attr-defined]
    for before in earlier:
        totals = {k: v + before.get(k, 0.0) for k, v in totals.items()}
    tracker.log_metrics(parent, totals, step=0)
    rows = read_rows(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else []
    best = best_of_rows(sweep, out)
    plots: list[Path] = []
    if best is not None:
        (out / "best_config.json").write_text(json.dumps(best, indent=1, default=str))
        tracker.log_artifact(parent, out / "best_config.json")
        tracker.set_tags(
            parent,
            {
                "best.trial_id": best["trial_id"],
                "best.rule": RULE,
                **{f"best.{k}": str(v) for k, v in best["config"].items()},
            },
        )
        tracker.log_metrics(
            parent, {f"best_{o.metric}": best[o.metric] for o in sweep.search.objectives}, step=0
        )
    if rows:
        plots = write_report_files(rows, out / "plots")
        for plot in plots:
            tracker.log_artifact(parent, plot, "plots")
    tracker.end_run(parent, "FINISHED")
    return totals, best, plots
