"""The sparsity-sweep pipeline vs independent runs, run as Ray Train jobs and compared per target.

sweep: one run passes through every target and keeps the best checkpoint of each target's window.
independent: one run per target with the sweep's per-target budget (same pruning epochs up to that
target, same window), each step heading straight for its own target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.ray_session import ray_session
from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import RUN_RESULTS
from ovit_ray.orchestration.specs.run import GradualConfig
from ovit_ray.orchestration.specs.search_space import STRATEGIES
from ovit_ray.orchestration.train.job import KEY_COLUMNS, RunResult, run_training


def run_strategies(
    config: GradualConfig,
    strategies: Sequence[str] = STRATEGIES,
    on_run: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run (or reuse) every run of the chosen strategies; rows go to `<out>/results.parquet` as each finishes."""
    if not config.targets:
        raise ValueError("targets: the strategy comparison needs at least one target sparsity, got none")
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        raise ValueError(f"strategies: unknown {bad}; choose from {', '.join(STRATEGIES)}")
    plans: list[tuple[str, dict[str, Any]]] = []
    if "sweep" in strategies:
        plans.append(("sweep", {}))
    if "independent" in strategies:
        for index, target in enumerate(config.targets):
            schedule = config.independent_schedule(index)
            plans.append(("independent", {"schedule": schedule, "tags": {"target": f"{target}"}}))
    results = []
    with ray_session(config.ray_address):  # one Ray instance for all the runs
        for strategy, extra in plans:
            result = run_training(config, strategy=strategy, **extra)
            append_rows(Path(config.out) / RESULTS_FILE, result.rows, KEY_COLUMNS, RUN_RESULTS)
            results.append(result)
            if on_run is not None:
                on_run(result)
    return results


def compare(results: Sequence[RunResult]) -> list[dict[str, Any]]:
    """Per target: top-1, epochs and compute of each strategy, then a totals row.

    Sweep epochs/compute at a target are what the one run had spent when that target's window closed;
    its total is the whole run. Independent ones are whole runs, summed in the total.
    """
    by_target: dict[float, dict[str, Any]] = {}
    totals: dict[str, Any] = {"target": "total"}
    for result in results:
        s = result.strategy
        for row in result.rows:
            entry = by_target.setdefault(row["target_sparsity"], {"target": row["target_sparsity"]})
            entry.update(
                {
                    f"{s}_top1": row["top1"],
                    f"{s}_val_top1": row["val_top1"],
                    f"{s}_sparsity": row["achieved_sparsity"],
                    f"{s}_epochs": row["epochs"],
                    f"{s}_cpu_hours": row["cpu_hours"],
                    f"{s}_gpu_hours": row["gpu_hours"],
                }
            )
        for name in ("epochs", "cpu_hours", "gpu_hours"):
            totals[f"{s}_{name}"] = (
                totals.get(f"{s}_{name}", 0) + result.summary["total_epochs" if name == "epochs" else name]
            )
    return [by_target[t] for t in sorted(by_target)] + [totals]
