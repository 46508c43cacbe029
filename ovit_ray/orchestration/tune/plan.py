"""The plan of a sweep before anything starts: which knobs vary, how many trials run at once on the
cluster's resources, and the lines `--dry-run` prints. No Ray, no MLflow: `--dry-run` runs this."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.specs.search_space import Dist
from ovit_ray.orchestration.specs.sweep import SweepConfig
from ovit_ray.orchestration.tracking.store import default_tracking_uri

DRIVER_CPU = 0.01  # the Train V2 driver function is light; its workers hold the real resources


@dataclass(frozen=True)
class Plan:
    """A resolved sweep: what varies, what is fixed, what each trial holds and how many run at once."""

    sweep: SweepConfig
    fixed: dict[str, Any]
    varying: dict[str, Dist]
    trial_cpus: float
    trial_gpus: float
    concurrency: int

    @property
    def light(self) -> bool:
        return self.sweep.resources.workers == 1


def split_knobs(sweep: SweepConfig) -> tuple[dict[str, Any], dict[str, Dist]]:
    fixed = {k: d.fixed for k, d in sweep.knobs.items() if d.kind == "fixed"}
    return fixed, {k: d for k, d in sweep.knobs.items() if d.kind != "fixed"}


def derive_concurrency(
    sweep: SweepConfig, cpus: float, gpus: float, *, strict: bool
) -> tuple[float, float, int]:
    """(CPUs, GPUs) one trial holds and how many trials fit at once (capped by the sweep's own limit)."""
    r = sweep.resources
    trial_cpus = r.workers * r.cpus_per_worker + (0 if r.workers == 1 else DRIVER_CPU)
    trial_gpus = r.workers * r.gpus_per_worker
    fits = math.floor(cpus / trial_cpus + 1e-9)
    if trial_gpus:
        fits = min(fits, math.floor(gpus / trial_gpus + 1e-9))
    if fits < 1 and strict:
        raise ValueError(
            f"resources: a trial needs {trial_cpus:g} CPU and {trial_gpus:g} GPU, the cluster has "
            f"{cpus:g} CPU and {gpus:g} GPU"
        )
    cap = [sweep.search.max_concurrent_trials or fits, fits, sweep.max_trials]
    return trial_cpus, trial_gpus, max(1, min(cap))


def make_plan(sweep: SweepConfig, cpus: float, gpus: float, *, strict: bool = True) -> Plan:
    fixed, varying = split_knobs(sweep)
    trial_cpus, trial_gpus, concurrency = derive_concurrency(sweep, cpus, gpus, strict=strict)
    return Plan(sweep, fixed, varying, trial_cpus, trial_gpus, concurrency)


def _dist_text(dist: Dist) -> str:
    return f"{dist.kind} {getattr(dist, dist.kind)}"


def describe(plan: Plan, out: Path, mlflow_uri: str | None) -> list[str]:
    """Human-readable resolved trials and resources (what `--dry-run` prints)."""
    sweep = plan.sweep
    lines = [
        f"sweep {sweep.name}: {sweep.max_trials} trial(s), search {sweep.search.algorithm} "
        f"(seed {sweep.seed}), objectives "
        + ", ".join(f"{o.mode} {o.metric}" for o in sweep.search.objectives)
    ]
    if sweep.search.scheduler is not None:
        s = sweep.search.scheduler
        lines.append(
            f"early stopping: ASHA on {s.metric}, grace {s.grace_period}, reduction {s.reduction_factor:g}"
        )
    lines.append("fixed: " + ", ".join(f"{k}={v}" for k, v in plan.fixed.items()))
    grid = {k: d.grid or [] for k, d in plan.varying.items() if d.kind == "grid"}
    sampled = {k: d for k, d in plan.varying.items() if d.kind != "grid"}
    for i, point in enumerate(itertools.product(*grid.values())):
        extra = f" + sampled {', '.join(sampled)}" if sampled else ""
        lines.append(
            f"  trial group {i + 1}: "
            + ", ".join(f"{k}={v}" for k, v in zip(grid, point, strict=True))
            + f" x {sweep.search.num_samples}{extra}"
        )
    lines += [f"  {k}: {_dist_text(d)}" for k, d in sampled.items()]
    r = sweep.resources
    path = (
        "light path (the loop inside the Tune trial)" if plan.light else "Train V2 (TorchTrainer per trial)"
    )
    lines.append(
        f"per trial: {r.workers} worker(s) x {r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU "
        f"({path}); {plan.concurrency} trial(s) at once"
    )
    uri = check_no_credentials(mlflow_uri or sweep.mlflow.uri or default_tracking_uri(out))
    lines.append(
        f"output: {out} (Tune: {storage_path(sweep, out)}/{sweep.name}; MLflow: "
        f"{uri}, experiment {sweep.mlflow.experiment})"
    )
    return lines


def storage_path(sweep: SweepConfig, out: Path) -> str:
    """The sweep's `storage`, else `$OVIT_RAY_STORAGE` (exported on every node by cluster.yaml: shared
    storage, so a trial moved to another node finds its checkpoints), else `<out>/ray`."""
    env = os.environ.get("OVIT_RAY_STORAGE")
    return sweep.storage or (
        check_no_credentials(env, "OVIT_RAY_STORAGE") if env else str((out / "ray").resolve())
    )
