"""A gradual-pruning run as a Ray Train V2 job, tracked in MLflow, with its result kept on disk.

Driver side (`run_training`): derive a deterministic run key from the config and schedule, reuse the
stored result if that run already finished, otherwise start (or continue, by key) its MLflow run and
fit a `TorchTrainer` whose Train run name is derived from the key, so a restarted driver finds the
run's own checkpoints. Worker side (`train_loop`): the Ray-free loop of `training.gradual` behind a
`RayReporter` that checkpoints every epoch through Ray (best checkpoints kept in the run's storage
folder). MLflow is written only on the driver's node: per-epoch metrics by `DriverTracking`, a callback
of the Train controller (which Ray pins to the driver's node), the rest by `run_training` itself, so a
SQLite store on the driver's disk works when the workers run on other nodes.
Compute (CPU/GPU-hours) is measured inside the workers: the trial's wall time includes queueing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from ovit_ray.orchestration.common.atomic import write_json_atomic
from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.common.ray_session import ray_session
from ovit_ray.orchestration.specs.run import GradualConfig
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.kept_models import log_best_checkpoints
from ovit_ray.orchestration.train.reporter import RayReporter
from ovit_ray.training.gradual import run_gradual
from ovit_ray.training.spec import RunSpec, Schedule

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
# Parquet rows of one run are unique by these (a re-run with the same key adds nothing).
KEY_COLUMNS = ["run_key", "target_sparsity"]


@dataclass(frozen=True)
class TrackingTarget:
    """Where the driver-side callback logs per-epoch metrics: plain values, so it pickles unchanged."""

    out_dir: str
    experiment: str
    uri: str | None
    run_id: str


class DriverTracking(UserCallback):
    """Per-epoch metrics of rank 0 to MLflow, from the Train controller (on the driver's node)."""

    def __init__(self, target: TrackingTarget) -> None:
        self.target = target

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None
    ) -> None:
        rank0 = metrics[0]
        numeric = {
            k: v
            for k, v in rank0.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "epoch"
        }
        tracker = Tracker(self.target.out_dir, self.target.experiment, self.target.uri)
        tracker.log_metrics(self.target.run_id, numeric, step=int(rank0["epoch"]))


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """`train_loop_per_worker`: runs on every Ray Train worker; rank 0's return value reaches the driver."""
    show_logs()  # rank 0's per-epoch line, through the worker's stderr to the driver's console
    context = ray.train.get_context()
    schedule: Schedule = config["schedule"]
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        context.get_world_rank(),
        context.get_world_size(),
        schedule.total_epochs,
    )
    return run_gradual(config["spec"], schedule, reporter, epoch_hook=config.get("epoch_hook"))


def torch_trainer(
    loop: Callable[[dict[str, Any]], Any],
    loop_config: dict[str, Any],
    spec: RunSpec,
    *,
    name: str,
    storage_path: str,
    max_failures: int,
    callbacks: list[Any] | None = None,
    custom: Mapping[str, float] | None = None,
    keep_checkpoints: int | None = None,
) -> TorchTrainer:
    """A `TorchTrainer` placed as `spec` says (workers, CPUs and GPUs each): the one
    construction of gradual and depth runs. Ray's annotations are Train V1's: V2 returns rank 0's value
    (Result.return_value) and takes ray.train.v2 UserCallbacks, which the V1 types do not know."""
    use_gpu = spec.gpus_per_worker > 0
    return TorchTrainer(
        loop,
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
            callbacks=callbacks or [],  # V2 callbacks
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
        ),
    )


def build_trainer(
    config: GradualConfig,
    schedule: Schedule,
    *,
    name: str,
    storage_path: str,
    callbacks: list[Any],
    custom: Mapping[str, float] | None = None,
    keep_checkpoints: int | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> TorchTrainer:
    """The one `TorchTrainer` of a gradual run, for `ovit-ray train` (driver-side MLflow callback) and
    for a multi-worker sweep trial (Tune report callback, the sweep's custom resources per worker)."""
    return torch_trainer(
        train_loop,
        {"spec": config, "schedule": schedule, "epoch_hook": epoch_hook},
        config,
        name=name,
        storage_path=storage_path,
        max_failures=config.max_failures,
        callbacks=callbacks,
        custom=custom,
        keep_checkpoints=keep_checkpoints,
    )


@dataclass(frozen=True)
class RunResult:
    """A finished run: its per-target rows (Parquet-ready) and the run-level summary."""

    run_key: str
    run_name: str
    strategy: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    reused: bool = False


def _rows(
    config: GradualConfig, key: str, name: str, strategy: str, summary: Mapping[str, Any]
) -> list[dict]:
    run_level = {
        k: summary[k] for k in ("total_epochs", "cpu_hours", "gpu_hours", "wall_seconds", "overhead_seconds")
    }
    knobs = config.computed_values()
    return [
        {
            "run_key": key,
            "run_name": name,
            "strategy": strategy,
            **knobs,
            "target_sparsity": t["target_sparsity"],
            "achieved_sparsity": t["achieved_sparsity"],
            "top1": t["top1"],
            "val_top1": t["val_top1"],
            "best_epoch": t["best_epoch"],
            "epochs": t["epochs"],
            "cpu_hours": t["cpu_hours"],
            "gpu_hours": t["gpu_hours"],
            "best_checkpoint": t["checkpoint"],
            **{f"run_{k}": v for k, v in run_level.items()},
        }
        for t in summary["targets"]
    ]


def run_training(
    config: GradualConfig,
    *,
    strategy: str | None = None,
    schedule: Schedule | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one gradual-pruning job to the end (or return its stored result if it already finished).

    `schedule` replaces the config's own (the independent strategy uses this).
    """
    strategy = strategy or config.strategy
    schedule = config.schedule() if schedule is None else schedule
    key = config.run_key(strategy, schedule)
    name = f"{strategy}-{key}"
    out = Path(config.out).resolve()
    run_dir = out / "runs" / name
    result_file = run_dir / RESULT_FILE
    if result_file.exists():
        stored = json.loads(result_file.read_text())
        return RunResult(key, name, strategy, stored["rows"], stored["summary"], reused=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    device_type = "gpu" if config.gpus_per_worker > 0 else "cpu"

    tracker = Tracker(out, config.experiment, config.mlflow_uri)
    params = {
        **config.model_dump(exclude={"out", "mlflow_uri", "ray_address"}),
        "strategy": strategy,
        "device_type": device_type,
        "steps": schedule.steps,
        "windows": schedule.windows,
    }
    run_id = tracker.start_run(
        name, params, {"strategy": strategy, "ovit.device": device_type, **(tags or {})}, run_key=key
    )
    tracking = TrackingTarget(str(out), config.experiment, config.mlflow_uri, run_id)
    with ray_session(config.ray_address):
        trainer = build_trainer(
            config,
            schedule,
            name=name,
            storage_path=str(out / "ray"),
            callbacks=[DriverTracking(tracking)],
            keep_checkpoints=2,
            epoch_hook=epoch_hook,
        )
        began = time.perf_counter()
        try:
            result = trainer.fit()
        except KeyboardInterrupt:
            tracker.end_run(run_id, "KILLED")
            raise
        except Exception:
            tracker.end_run(run_id, "FAILED")
            raise
        wall = time.perf_counter() - began
    summary = dict(result.return_value)  # type: ignore[attr-defined]
    summary.update(
        wall_seconds=wall,
        overhead_seconds=wall - summary["loop_seconds"],
        mlflow_run_id=run_id,
        ray_path=result.path,
    )
    tracker.log_metrics(
        run_id,
        {
            k: summary[k]
            for k in (
                "cpu_hours",
                "gpu_hours",
                "total_epochs",
                "wall_seconds",
                "overhead_seconds",
                "worker_seconds",
            )
        },
        step=summary["total_epochs"],
    )
    log_best_checkpoints(
        tracker, run_id, [(t["target_sparsity"], t["checkpoint"]) for t in summary["targets"]]
    )
    tracker.end_run(run_id)
    rows = _rows(config, key, name, strategy, summary)
    write_json_atomic(result_file, {"rows": rows, "summary": summary})
    return RunResult(key, name, strategy, rows, summary)
