"""A fixed list of independent jobs as a Ray Tune grid: each finished job is one MLflow child run under one
parent run and one Parquet row, and jobs already in the Parquet file are skipped, so a re-run resumes.

What the transfer ablation and the structured-pruning frontier share: neither searches (every point of the
grid is wanted) and neither reports per epoch, so a trial only runs its job and returns the row. Jobs run as
Tune trials (`cpus_per_trial` each, at most `max_concurrent` at once), or in this process with `light=True`
(what the benchmarks use on a busy 2-core machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.tune import Callback

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.parquet import append_rows, read_rows
from ovit_ray.orchestration.tracking.client import Tracker

Row = dict[str, Any]


@dataclass(frozen=True)
class GridKind:
    """What differs between grids. `run_job` must be a module-level function: Tune pickles it."""

    name: str  # the `ovit.kind` tag, the Tune experiment and the parent run's name
    run_job: Callable[[Mapping[str, Any]], Row]
    job_key: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # equals the row's key columns
    key_columns: Sequence[str]
    schema: pa.Schema
    metrics: Sequence[str]  # row values logged as MLflow metrics; the rest are params
    step_column: str | None = None  # the metrics' MLflow step


def _trial(config: dict[str, Any], run_job: Callable[[Mapping[str, Any]], Row]) -> None:
    from ray import tune

    tune.report({"row_json": json.dumps(run_job(config["job"]))})


class _RowsAsTheyCome(Callback):
    """Keeps each row the moment its trial reports it, so an interrupted grid loses no finished job. Tune
    pickles its callbacks with the experiment state: the row sink (MLflow client, locks) is left out of
    the pickle and stays in this process."""

    def __init__(self, sink: Callable[[Row], None]) -> None:
        self.sink: Callable[[Row], None] | None = sink

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.sink is not None and "row_json" in result:
            self.sink(json.loads(result["row_json"]))

    def __getstate__(self) -> dict[str, Any]:
        return {"sink": None}


def _run_tune(
    kind: GridKind,
    jobs: Sequence[dict[str, Any]],
    out: Path,
    cpus_per_trial: float,
    max_concurrent: int | None,
    on_row: Callable[[Row], None],
) -> None:
    from ray import tune

    from ovit_ray.orchestration.common.ray_session import ray_session

    trainable = tune.with_parameters(_trial, run_job=kind.run_job)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus_per_trial}),
        param_space={"job": tune.grid_search(list(jobs))},
        # A fresh actor per job costs ~10 s here (a new process importing torch and timm); jobs share nothing
        # in-process that a reused actor would leak (speed timings restore the thread count they set).
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=kind.name,
            storage_path=str((out / "ray").resolve()),
            verbose=0,
            callbacks=[_RowsAsTheyCome(on_row)],
        ),
    )
    with ray_session():
        tuner.fit()


def run_grid(
    kind: GridKind,
    jobs: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    light: bool = False,
    experiment: str,
    mlflow_uri: str | None = None,
    cpus_per_trial: float = 1.0,
    max_concurrent: int | None = None,
    parent_params: Mapping[str, Any] | None = None,
    progress: Callable[[Row], None] | None = None,
    plots: Callable[[list[Row]], list[Path]] | None = None,
) -> list[Row]:
    """Run the jobs not yet in `<out>/results.parquet`; returns all rows of the file. `plots` makes files
    from all rows at the end, logged as artifacts of the parent run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_FILE
    done = {tuple(r[k] for k in kind.key_columns) for r in read_rows(results)} if results.exists() else set()
    todo = [j for j in jobs if kind.job_key(j) not in done]
    tracker = Tracker(out, experiment, mlflow_uri)
    tags = {"ovit.kind": kind.name}
    parent = tracker.start_run(
        kind.name, {"jobs": len(jobs), **(parent_params or {})}, tags, run_key=f"{kind.name}-{out.resolve()}"
    )

    def finish(row: Row) -> None:
        key = "/".join(str(row[k]) for k in kind.key_columns)
        run = tracker.start_run(
            key,
            {k: v for k, v in row.items() if k not in kind.metrics},
            tags,
            parent_run_id=parent,
            run_key=f"{kind.name}-{out.resolve()}-{key}",
        )
        step = (
            round(float(row[kind.step_column]))
            if kind.step_column and row.get(kind.step_column) is not None
            else 0
        )
        tracker.log_metrics(
            run, {k: float(row[k]) for k in kind.metrics if row.get(k) is not None}, step=step
        )
        tracker.end_run(run)
        append_rows(results, [row], kind.key_columns, kind.schema)
        if progress is not None:
            progress(row)

    if light:
        for job in todo:
            finish(kind.run_job(job))
    elif todo:
        _run_tune(kind, todo, out, cpus_per_trial, max_concurrent, finish)
    rows = read_rows(results) if results.exists() else []
    for path in plots(rows) if plots and rows else []:
        tracker.log_artifact(parent, path, "plots")
    tracker.end_run(parent)
    return rows
