"""A BoundaryDPT run as a Ray Train V2 job: the Ray-free loop of `training.depth` on every worker behind the
gradual run's `RayReporter` (a checkpoint per epoch, DDP over `workers`, resume from the newest readable
checkpoint after a worker dies), named by the run's key so a restarted driver continues its own run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.common.ray_session import ray_session
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
    use_gpu = spec.gpus_per_worker > 0
    trainer = TorchTrainer(
        depth_train_loop,  # type: ignore[arg-type]  # Train V2 passes the config and returns rank 0's value
        train_loop_config={"spec": spec, "epoch_hook": epoch_hook},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.workers,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": spec.cpus_per_worker,
                **({"GPU": spec.gpus_per_worker} if use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=spec.run_key,
            storage_path=str((Path(out) / "ray").resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    with ray_session(ray_address):
        result = trainer.fit()
    return {**result.return_value, "ray_path": result.path}  # type: ignore[attr-defined]
