"""The plan of a sweep before anything starts: which knobs vary, what a trial holds, how many run at once on
the cluster's resources, and the lines `--dry-run` prints. No Ray, no MLflow, no torch: `--dry-run` runs this."""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovit_ray.knobs import short_value
from ovit_ray.orchestration.common.secrets import check_no_credentials, redact_uri
from ovit_ray.orchestration.kinds.sweep_file import Sweep
from ovit_ray.orchestration.specs.search_space import Dist

__all__ = ["DRIVER_CPU", "Plan", "describe", "make_plan", "storage_root"]

DRIVER_CPU = 0.01  # the Train V2 driver function is light; its workers hold the real resources


@dataclass(frozen=True)
class Plan:
    """A resolved sweep: what varies, what is fixed, what each trial holds and how many run at once."""

    sweep: Sweep
    fixed: dict[str, Any]
    varying: dict[str, Dist]
    trial_cpus: float
    trial_gpus: float
    concurrency: int

    @property
    def in_trial(self) -> bool:
        """One worker: the loop runs inside the Tune trial, which holds the worker's resources."""
        return self.sweep.file.resources.workers == 1


def make_plan(sweep: Sweep, cpus: float, gpus: float, *, strict: bool = True) -> Plan:
    """(CPUs, GPUs) one trial holds and how many trials fit at once (capped by the sweep's own limit)."""
    r = sweep.file.resources
    trial_cpus = r.workers * r.cpus_per_worker + (0 if r.workers == 1 else DRIVER_CPU)
    trial_gpus = r.workers * r.gpus_per_worker
    fits = math.floor(cpus / trial_cpus + 1e-9)
    if trial_gpus:
        fits = min(fits, math.floor(gpus / trial_gpus + 1e-9))
    if fits < 1 and strict:
        raise ValueError(
            f"resources: a trial needs {trial_cpus:g} CPU and {trial_gpus:g} GPU, the cluster has {cpus:g} CPU "
            f"and {gpus:g} GPU"
        )
    cap = [sweep.file.search.max_concurrent_trials or fits, fits, sweep.max_trials]
    fixed = sweep.fixed_values()
    varying = {k: d for k, d in sweep.knobs.items() if d.kind != "fixed"}
    return Plan(sweep, fixed, varying, trial_cpus, trial_gpus, max(1, min(cap)))


def storage_root(sweep: Sweep, out: Path) -> str:
    """The sweep's `storage`, else `$OVIT_RAY_STORAGE` (exported on every node by the cluster files: shared
    storage, so a trial moved to another node finds its checkpoints), else `<out>/ray`."""
    env = os.environ.get("OVIT_RAY_STORAGE")
    return sweep.file.storage or (
        check_no_credentials(env, "OVIT_RAY_STORAGE") if env else str((out / "ray").resolve())
    )


def describe(plan: Plan, out: Path, mlflow_uri: str | None, tracking_uri: str) -> list[str]:
    """Human-readable resolved trials and resources (what `--dry-run` prints), 80 columns at most."""
    sweep = plan.sweep
    search = sweep.file.search
    lines = [
        f"sweep {sweep.name} ({sweep.kind}): {sweep.max_trials} trial(s), search {search.algorithm}, "
        + ", ".join(f"{o.mode} {o.metric}" for o in search.objectives)
    ]
    if search.scheduler is not None:
        s = search.scheduler
        lines.append(
            f"early stopping: ASHA on {s.metric}, grace {s.grace_period}, reduction {s.reduction_factor:g}"
        )
    base = {**sweep.base(), **plan.fixed}
    fixed = "fixed: " + ", ".join(f"{k}={short_value(v)}" for k, v in base.items())
    lines += textwrap.wrap(
        fixed, 80, subsequent_indent=" " * 7, break_long_words=False, break_on_hyphens=False
    )
    for name, dist in plan.varying.items():
        lines.append(f"  {name}: {dist.kind} {short_value(list(getattr(dist, dist.kind)))}")
    r = sweep.file.resources
    where = (
        "in this process, no Ray" if r.local else ("inside the Tune trial" if plan.in_trial else "Ray Train")
    )
    lines.append(
        f"per trial: {r.workers} worker(s) x {r.cpus_per_worker:g} CPU, {r.gpus_per_worker:g} GPU ({where}); "
        + ("one after another" if r.local else f"{plan.concurrency} at once")
    )
    lines.append(f"output: {out}")
    lines.append(f"Tune storage: {storage_root(sweep, out)}")
    lines.append(
        f"MLflow: {redact_uri(check_no_credentials(mlflow_uri or sweep.file.mlflow.uri or tracking_uri))}, "
        f"experiment {sweep.file.mlflow.experiment}"
    )
    return lines
