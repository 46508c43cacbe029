"""A BoundaryDPT run as a Ray Train V2 job: the Ray-free loop of `training.depth` on every worker behind the
gradual run's `RayReporter` (a checkpoint per epoch, DDP over `workers`, resume from the newest readable
checkpoint after a worker dies), named by the run's key so a restarted driver continues its own run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train

from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.common.ray_session import ray_session
from ovit_ray.orchestration.train.job import torch_trainer
from ovit_ray.orchestration.train.reporter import RayReporter
from ovit_ray.training.depth import DepthSpec
from ovit_ray.training.depth.run import run_depth


def depth_train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """`train_loop_per_worker`: rank 0's summary reaches the driver."""
    show_logs()
    context = ray.train.get_context()
    spec: DepthSpec = config["spec"]
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        context.get_world_rank(),
        context.get_world_size(),
        spec.total_epochs,
    )
    return run_depth(spec, reporter, epoch_hook=config.get("epoch_hook"))


def run_depth_training(
    spec: DepthSpec,
    out: str | Path,
    *,
    max_failures: int = 1,
    ray_address: str | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue, by `spec.run_key`) the depth run on `spec.workers` Ray Train workers; returns rank
    0's summary (its best checkpoint in `<out>/ray/<run_key>/.../best/`) with the run's Ray path."""
    trainer = torch_trainer(
        depth_train_loop,
        {"spec": spec, "epoch_hook": epoch_hook},
        spec,
        name=spec.run_key,
        storage_path=str((Path(out) / "ray").resolve()),
        max_failures=max_failures,
        keep_checkpoints=2,
    )
    with ray_session(ray_address):
        result = trainer.fit()
    return {**result.return_value, "ray_path": result.path}  # type: ignore[attr-defined]
