"""Run a structured sweep: score each (method, seed) once in the driver (cached on disk), then every point
as one job of `tune.grid` (a Tune trial, or in process with `light`): shrink, evaluate, time, keep the model.

Scoring first, in one place, is what keeps the points cheap and their scores identical: a trial finds the
scores of its (model, calibration batch, settings) in the cache instead of computing them again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.depth.points import depth_job_key, depth_jobs, run_depth_job
from ovit_ray.orchestration.results.frontier import plot_frontier
from ovit_ray.orchestration.results.schemas import STRUCTURED_RESULTS
from ovit_ray.orchestration.structured.sweep_file import StructuredSweep, load_structured_sweep
from ovit_ray.orchestration.tune.grid import GridKind, run_grid

METRICS = (
    "top1",
    "val_top1",
    "top1_masked",
    "achieved_flops_ratio",
    "achieved_token_share",
    "gmacs",
    "gmacs_sparse",
    "params",
    "latency_ms",
    "latency_p90_ms",
    "throughput_ips",
    "speedup_latency",
    "speedup_throughput",
    "score_seconds",
    "top1_after_removal",
)
KEY_COLUMNS = ["run_key", "model"]


def structured_jobs(sweep: StructuredSweep, out: Path) -> list[dict[str, Any]]:
    """Every method x point x seed, then the unstructured points; plain dicts (Tune's grid values)."""
    grid = sweep.structured
    where = {
        "model": grid.model,
        "checkpoint": grid.checkpoint,
        "dataset": grid.dataset,
        "data_root": grid.data_root,
        "out": str(out.resolve()),
        "speed": grid.speed.model_dump(),
    }
    jobs = []
    for method in grid.methods:
        for point in sweep.points:
            for seed in grid.seeds:
                knobs = point.model_dump()
                optin = {k: knobs.pop(k) for k in ("lam", "temperature", "gram_tokens")}
                jobs.append({**where, "job": {"method": method, "seed": seed, **knobs}, "optin": optin})
    if grid.unstructured is not None:
        u = grid.unstructured
        then = {"method": u.method, "num_grads": u.num_grads, "block_size": u.block_size}
        for sparsity in u.sparsities:
            for seed in grid.seeds:
                job = {"method": "none", "flops_ratio": 1.0, "seed": seed, "then_sparsity": sparsity}
                jobs.append({**where, "job": job, "then": then})
    if grid.depth is not None:
        places = {k: where[k] for k in ("model", "checkpoint", "dataset", "data_root")}
        jobs += depth_jobs(grid.depth, grid.seeds, places, {k: where[k] for k in ("out", "speed")})
    return jobs


def _structured_job(job: Mapping[str, Any]) -> Any:
    from ovit_ray.pruning import PruneSettings
    from ovit_ray.pruning.structured import OptinSettings
    from ovit_ray.training.structured import StructuredJob

    then = PruneSettings(**job["then"]) if job.get("then") else None
    return StructuredJob(**job["job"], optin=OptinSettings(**job.get("optin", {})), then=then)


def job_key(job: Mapping[str, Any]) -> tuple[Any, ...]:
    if "depth" in job:
        return depth_job_key(job)
    return _structured_job(job).run_key, job["model"]


def run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """One point: the model from its preset or checkpoint, pruned, evaluated, timed, kept under `out`."""
    if "depth" in job:
        return run_depth_job(job)
    from ovit_ray.models import PRESETS
    from ovit_ray.training.setup import build_model_and_data
    from ovit_ray.training.structured import SpeedSettings, structured_rows

    start = build_model_and_data(
        job["model"],
        checkpoint=job["checkpoint"],
        dataset=job["dataset"],
        data_root=job["data_root"],
        progress=False,
    )
    preset = PRESETS.get(job["model"])
    identity = {"dataset": job["dataset"] or (preset.dataset if preset else "digits"), "split_seed": 0}
    (row,) = structured_rows(
        start,
        [_structured_job(job)],
        Path(job["out"]),
        model_name=job["model"],
        identity=identity,
        speed=SpeedSettings(**job["speed"]),
    )
    return row


STRUCTURED = GridKind(
    name="structured",
    run_job=run_job,
    job_key=job_key,
    key_columns=KEY_COLUMNS,
    schema=STRUCTURED_RESULTS,
    metrics=METRICS,
)


def score_once(jobs: list[dict[str, Any]]) -> None:
    """Fill the score cache for every (model, method, seed, calibration) the jobs use, in this process."""
    from ovit_ray.pruning.structured import OptinSettings
    from ovit_ray.training.setup import build_model_and_data
    from ovit_ray.training.structured import cached_scores, calibration_images

    wanted = {}
    for job in jobs:
        if "depth" in job:  # scored inside its run, on its own calibration batch
            continue
        spec = _structured_job(job)
        if spec.method != "none":
            settings = OptinSettings(**{**dataclasses.asdict(spec.optin), "seed": spec.seed})
            key = (job["model"], job["checkpoint"], job["dataset"], spec.method, spec.calib_size, settings)
            wanted[key] = job
    starts: dict[tuple[Any, ...], Any] = {}
    for (model, checkpoint, dataset, method, calib, settings), job in wanted.items():
        where = (model, checkpoint, dataset)
        if where not in starts:
            starts[where] = build_model_and_data(
                model, checkpoint=checkpoint, dataset=dataset, data_root=job["data_root"], progress=False
            )
        start = starts[where]
        images = calibration_images(start.data, calib, settings.seed)
        cached_scores(start.model.eval(), images, method, settings)


def run_structured_sweep(
    path: str | Path,
    out: str | Path,
    *,
    mlflow_uri: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a structured sweep file into `out`; returns all its rows and writes the frontier plot
    (`<out>/plots/frontier.png`, also logged to the MLflow parent run)."""
    sweep = load_structured_sweep(path)
    out = Path(out)
    grid = sweep.structured
    jobs = structured_jobs(sweep, out)
    score_once(jobs)
    uri = mlflow_uri or sweep.mlflow.tracking_uri
    return run_grid(
        STRUCTURED,
        jobs,
        out,
        light=grid.light,
        experiment=sweep.mlflow.experiment,
        mlflow_uri=uri,
        cpus_per_trial=grid.cpus_per_trial,
        max_concurrent=grid.max_concurrent_trials,
        parent_params={
            "sweep": sweep.name,
            "model": grid.model,
            "methods": ",".join(grid.methods + (["boundarydpt"] if grid.depth else [])),
        },
        progress=progress,
        plots=lambda rows: [plot_frontier(rows, out / "plots" / "frontier.png")],
    )
