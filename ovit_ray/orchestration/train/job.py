"""A training loop on several Ray Train V2 workers: the one `TorchTrainer` construction of every kind.

A trial whose spec asks for more than one worker becomes the Train driver of a `TorchTrainer` named after
the trial and run (deterministic: a restored trial finds its own checkpoints); every worker runs the kind's
Ray-free loop behind a `RayReporter` that checkpoints every epoch through Ray Train and keeps best models
in the trial's kept folder. Rank 0's metrics reach Tune through `TuneReportCallback`, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.train.reporter import RayReporter
from ovit_ray.training.kept import folder_at
from ovit_ray.training.spec import TrainSpec


def train_worker(config: dict[str, Any]) -> dict[str, Any]:
    """`train_loop_per_worker`: the kind's loop on this worker; rank 0's summary and delivered targets
    reach the driver as the run's return value."""
    show_logs()
    context = ray.train.get_context()
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        context.get_world_rank(),
        context.get_world_size(),
        folder_at(config["kept"]),
    )
    summary = config["loop"](config["config"], reporter)
    return {"summary": summary, "targets": reporter.targets}


def torch_trainer(
    loop_config: dict[str, Any],
    spec: TrainSpec,
    *,
    name: str,
    storage_path: str,
    max_failures: int,
    callbacks: list[Any] | None = None,
    custom: Mapping[str, float] | None = None,
) -> TorchTrainer:
    """A `TorchTrainer` running `train_worker` placed as `spec` says (workers, CPUs and GPUs each; NCCL on
    GPUs, gloo otherwise). Ray's annotations are Train V1's: V2 returns rank 0's value (Result.return_value)
    and takes ray.train.v2 UserCallbacks, which the V1 types do not know."""
    use_gpu = spec.gpus_per_worker > 0
    return TorchTrainer(
        train_worker,  # type: ignore[arg-type]  # V2 returns rank 0's value
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.workers,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": spec.cpus_per_worker,
                **({"GPU": spec.gpus_per_worker} if use_gpu else {}),
                **(custom or {}),
            },
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            failure_config=FailureConfig(max_failures=max_failures),
            # the newest checkpoint, and one to fall back on if it is corrupt
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
