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

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2.api.callback import UserCallback

from ovit_ray.orchestration.common.atomic import write_json_atomic
from ovit_ray.orchestration.common.interrupts import init_ray
from ovit_ray.orchestration.specs.run import PLACEMENT_FIELDS, GradualConfig, Steps, Windows
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.kept_models import log_best_checkpoints
from ovit_ray.training.gradual import CorruptCheckpointError, GradualSpec, run_gradual, verify_state
from ovit_ray.training.kept import KeptFolder

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


class RayReporter:
    """`training.gradual.Reporter` for Ray Train workers and (with ray.tune's functions) Tune function trials."""

    def __init__(
        self,
        report: Callable[..., None],
        get_checkpoint: Callable[[], Checkpoint | None],
        world_rank: int,
        world_size: int,
        total_epochs: int,
        *,
        accept: Callable[[Path], bool] | None = None,
        checkpoint_type: type[Checkpoint] = Checkpoint,
    ):
        """`accept(directory)` tells this run's checkpoints from older ones in the same folder (a
        fallback never crosses into another run's). Tune trials pass `ray.tune.Checkpoint`: Ray 2.60
        warns on every report that gets a `ray.train.Checkpoint` inside a Tune function."""
        self._report, self._get_checkpoint, self._accept = report, get_checkpoint, accept
        self._checkpoint_type = checkpoint_type
        self.world_rank, self.world_size = world_rank, world_size
        self._total_epochs = total_epochs
        self._kept: KeptFolder | None = None

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        if self.world_rank == 0:
            print(
                f"epoch {metrics['epoch'] + 1}/{self._total_epochs}  sparsity {metrics['sparsity']:.4f}  "
                f"test top-1 {metrics['top1']:.4f}  val top-1 {metrics['val_top1']:.4f}  "
                f"val loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}",
                flush=True,
            )
        checkpoint = None if checkpoint_dir is None else self._checkpoint_type.from_directory(checkpoint_dir)
        self._report(dict(metrics), checkpoint=checkpoint)
        if checkpoint is not None:
            self._promote(
                self._get_checkpoint()
            )  # after the report: the persisted copy, in the run's storage

    def _promote(self, persisted: Checkpoint | None) -> None:
        if persisted is not None and self.world_rank == 0:
            self._kept = KeptFolder.beside(persisted.filesystem, persisted.path)
            self._kept.promote(persisted.path)

    def kept_folder(self) -> KeptFolder | None:
        return self._kept

    @contextmanager
    def checkpoint_dir(self) -> Iterator[str | None]:
        """The newest readable checkpoint of this run: a corrupt one is named and skipped, so a
        crash while one was being written costs one more epoch instead of the run."""
        corrupt: list[str] = []
        for checkpoint in checkpoint_history(self._get_checkpoint()):
            with checkpoint.as_directory() as directory:
                if self._accept is not None and not self._accept(Path(directory)):
                    break
                try:
                    verify_state(directory)
                except CorruptCheckpointError as err:
                    log.error("%s; falling back to the previous checkpoint", err)
                    corrupt.append(checkpoint.path)
                    continue
                self._promote(checkpoint)  # a crash between a report and its promotion loses nothing
                yield directory
                return
        if corrupt:
            raise CorruptCheckpointError(
                f"no readable checkpoint left to resume from (corrupt: {', '.join(corrupt)})"
            )
        yield None


def checkpoint_history(latest: Checkpoint | None) -> list[Checkpoint]:
    """`latest`, then the older checkpoints in its folder, newest first (Tune and Train name them
    `checkpoint_<index or timestamp>`, so name order is time order); works on any pyarrow filesystem."""
    if latest is None:
        return []
    parent, name = latest.path.rstrip("/").rsplit("/", 1)
    infos = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    older = sorted(
        (
            info.path
            for info in infos
            if info.type == pyarrow.fs.FileType.Directory
            and info.base_name.startswith("checkpoint_")
            and info.base_name < name
        ),
        reverse=True,
    )
    return [latest, *(Checkpoint(path, latest.filesystem) for path in older)]


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """`train_loop_per_worker`: runs on every Ray Train worker; rank 0's return value reaches the driver."""
    context = ray.train.get_context()
    spec = GradualSpec(**config["spec"])
    reporter = RayReporter(
        ray.train.report,
        ray.train.get_checkpoint,
        context.get_world_rank(),
        context.get_world_size(),
        spec.total_epochs,
    )
    return run_gradual(spec, reporter, epoch_hook=config.get("epoch_hook"))


def ensure_ray(address: str | None = None) -> None:
    """Connect to `address`, or start a private local instance (127.0.0.1, no dashboard) if none is up."""
    if not ray.is_initialized():
        init_ray(address=address or "local", include_dashboard=False, log_to_driver=True)


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
    knobs = config.model_dump(exclude=PLACEMENT_FIELDS)
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
    steps: Steps | None = None,
    windows: Windows | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
    tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one gradual-pruning job to the end (or return its stored result if it already finished).

    `steps`/`windows` override the config's schedule (the independent strategy uses this).
    """
    strategy = strategy or config.strategy
    default_steps, default_windows = config.schedule()
    steps, windows = steps or default_steps, windows or default_windows
    key = config.run_key(strategy, steps, windows)
    name = f"{strategy}-{key}"
    out = Path(config.out).resolve()
    run_dir = out / "runs" / name
    result_file = run_dir / RESULT_FILE
    if result_file.exists():
        stored = json.loads(result_file.read_text())
        return RunResult(key, name, strategy, stored["rows"], stored["summary"], reused=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = config.to_spec(steps, windows)
    device_type = "gpu" if config.gpus_per_worker > 0 else "cpu"

    tracker = Tracker(out, config.experiment, config.mlflow_uri)
    params = {
        **config.model_dump(exclude={"out", "mlflow_uri", "ray_address"}),
        "strategy": strategy,
        "device_type": device_type,
        "steps": steps,
        "windows": windows,
    }
    run_id = tracker.start_run(
        name, params, {"strategy": strategy, "ovit.device": device_type, **(tags or {})}, run_key=key
    )
    tracking = TrackingTarget(str(out), config.experiment, config.mlflow_uri, run_id)
    ensure_ray(config.ray_address)
    use_gpu = config.gpus_per_worker > 0
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"spec": dataclasses.asdict(spec), "epoch_hook": epoch_hook},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=use_gpu,
            resources_per_worker={
                "CPU": config.cpus_per_worker,
                **({"GPU": config.gpus_per_worker} if use_gpu else {}),
            },
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(out / "ray"),
            callbacks=[DriverTracking(tracking)],
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
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
    summary = dict(result.return_value)
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
