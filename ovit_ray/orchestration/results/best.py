"""The best trial of an output folder, by one rule (`table.best_first`: the first objective, then the mean
top-1 over targets (validation top-1 for a validation objective), then the earliest trial), for
best_config.json, the MLflow parent's `best.*` tags, the report's `*` and `ovit-ray export --trial best`.

Trials often tie on top-1 (one digits validation image is 0.28 points), and Tune's own pick and the order of
a ResultGrid change between runs and resumes. The rule reads only the append-only `results.parquet` and
`trials.parquet`, so resuming without new trials changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE
from ovit_ray.orchestration.results.parquet import read_rows

__all__ = ["RULE", "best_trial"]

RULE = "first objective, then mean top-1 over targets, then the earliest trial"


def best_trial(out: Path) -> tuple[str, dict[str, Any]] | None:
    """(objective metric, the best finished trial's entry) of the folder `out`; None before any finished."""
    from ovit_ray.orchestration.results.table import best_first

    if not (out / RESULTS_FILE).exists():
        return None
    results = read_rows(out / RESULTS_FILE)
    trials = read_rows(out / TRIALS_FILE) if (out / TRIALS_FILE).exists() else []
    metric, _, ranked = best_first(out, results, trials)
    finished = [t for t in ranked if t.get(metric) is not None and t["targets"] and t["status"] == "finished"]
    return (metric, finished[0]) if finished else None
