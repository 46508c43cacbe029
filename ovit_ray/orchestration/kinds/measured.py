"""What the kinds that time their models share: the timing knobs, the measured columns of a row, and a look
at the model's architecture on the meta device (no weights, no memory) for checks before Ray starts."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ovit_ray.knobs import Knobs, knob
from ovit_ray.pruning.settings import MAX_COUNT

if TYPE_CHECKING:
    from torch import nn

    from ovit_ray.data import DatasetSplits
    from ovit_ray.training.result import TargetResult
    from ovit_ray.training.structured import SpeedSettings

__all__ = ["MeasuredResult", "SpeedKnobs", "architecture", "checkpoint_problems", "measured_target"]


class SpeedKnobs(Knobs):
    """How the dense and the pruned model are timed against each other (one interleaved loop)."""

    throughput_batch: int = knob(256, "batch size of the throughput timing", gt=0, le=MAX_COUNT)
    latency_runs: int = knob(200, "timed batch-1 runs", gt=0, le=MAX_COUNT)
    throughput_runs: int = knob(20, "timed throughput runs", gt=0, le=MAX_COUNT)
    device: str = knob(
        "cpu",
        "device the models are timed and evaluated on (cpu, cuda, cuda:N)",
        pattern=r"^(cpu|cuda(:\d{1,3})?)$",
    )
    time_models: bool = knob(
        True, "time each pruned model against the dense one (the speed frontier)", label="timed"
    )

    def speed(self) -> SpeedSettings | None:
        """How to time the models, or None without timing."""
        from ovit_ray.training.structured import SpeedSettings

        if not self.time_models:
            return None
        return SpeedSettings(
            self.throughput_batch, self.latency_runs, self.throughput_runs, device=self.device
        )

    def unused(self) -> set[str]:
        return super().unused() | (
            set() if self.time_models else {"throughput_batch", "latency_runs", "throughput_runs"}
        )


class MeasuredResult(BaseModel):
    """Columns of a timed row beside the shared ones (`training.structured.speed.speed_columns`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    heads_kept: list[int] | None = None
    neurons_kept: list[int] | None = None
    gmacs_dense: float | None = None
    params_dense: int | None = None
    top1_dense: float | None = None
    val_top1_dense: float | None = None
    latency_p90_ms: float | None = None
    latency_dense_ms: float | None = None
    throughput_ips: float | None = None
    throughput_dense_ips: float | None = None
    speed_batch: int | None = None
    speed_threads: int | None = None
    speed_device: str | None = None
    torch_version: str | None = None
    model_source: str | None = None


@functools.lru_cache(maxsize=8)
def architecture(model: str) -> nn.Module:
    """The model's modules on the meta device: its family and depth, without weights or memory. Cached (read
    it, never change it): a preflight asks once per grid point, and building a model is ~0.1 s each."""
    import torch

    from ovit_ray.models import create_model

    with torch.device("meta"):
        return create_model(model)


def vit_problems(model: str) -> list[str]:
    """The one line structured and depth pruning give for a family they do not support."""
    from ovit_ray.pruning.structured.units import vit_family

    try:
        vit_family(architecture(model))
    except ValueError as err:
        return [f"model: {err}"]
    return []


SHARED_FROM_ROW = {  # result column -> its key in a structured or depth row
    "val_top1": "val_top1",
    "achieved_sparsity": "achieved_sparsity",
    "macs_ratio": "achieved_flops_ratio",
    "gmacs": "gmacs",
    "params": "params_nonzero",
    "latency_ms": "latency_ms",
    "speedup_latency": "speedup_latency",
    "speedup_throughput": "speedup_throughput",
}


def measured_target(row: dict[str, Any], result: type[BaseModel], **fields: Any) -> TargetResult:
    """A structured or depth row (`training.structured` / `training.depth`) as a target: its shared columns,
    the kind's `result` columns as `extra`, and `fields` (the target, the kept model, ...)."""
    from ovit_ray.training.result import TargetResult

    shared = {name: row.get(key) for name, key in SHARED_FROM_ROW.items()}
    extra = {k: row.get(k) for k in result.model_fields}
    return TargetResult(top1=row["top1"], extra=extra, **shared, **fields)


@functools.lru_cache(maxsize=4)
def _split(model: str, dataset: str | None, data_root: str | None, split_seed: int) -> DatasetSplits:
    """The data a job of these knobs reads, loaded once for every check of a preflight (read, never changed):
    each grid point's counts and each checkpoint would otherwise read the dataset again."""
    from ovit_ray.training.setup import job_data

    return job_data(model, dataset=dataset, data_root=data_root, split_seed=split_seed)


def checkpoint_problems(spec: Any) -> list[str]:
    """A `checkpoint` that does not fit the spec's model on its data (another head, another shape): one line
    before anything runs, not a failed trial (the model is built and loaded once per checkpoint, on the CPU:
    a shrunk model cannot be rebuilt on the meta device)."""
    if not spec.checkpoint:
        return []
    return list(
        _checkpoint_problems(spec.model, spec.checkpoint, spec.dataset, spec.data_root, spec.split_seed)
    )


@functools.lru_cache(maxsize=8)
def _checkpoint_problems(
    model: str, checkpoint: str, dataset: str | None, data_root: str | None, split_seed: int
) -> tuple[str, ...]:
    """Cached: a preflight asks once per grid point, and a checkpoint is read whole."""
    from ovit_ray.training.setup import checkpoint_model

    try:
        data = _split(model, dataset, data_root, split_seed)
        checkpoint_model(model, checkpoint, data, dataset or "its dataset")
    except (OSError, ValueError) as err:
        return (f"checkpoint: {err}",)
    return ()


def count_problems(spec: Any, sparsities: list[float], calib_size: int | None = None) -> list[str]:
    """The device, and the counts the model and its data bound (a block no larger than the largest prunable
    tensor, gradients within passes over the train split, a sparsity that leaves a weight, ...), each one line
    naming the knob and the bound; the model is built on the meta device, the data split read."""
    from ovit_ray.orchestration.common.bounds import check_device, check_prune_counts, prune_facts

    names = {k: k for k in ("block_size", "num_grads", "grad_batch_size", "calib_size")} | {
        "sparsity": "sparsities"
    }
    try:
        check_device(spec.device, "device")
        data = _split(spec.model, spec.dataset, spec.data_root, spec.split_seed)
        facts = prune_facts(
            architecture(spec.model), data.train, getattr(spec, "patterns", None), spec.device
        )
        check_prune_counts(
            facts,
            block_size=spec.block_size,
            num_grads=spec.num_grads,
            grad_batch_size=getattr(spec, "grad_batch_size", 1),
            sparsities=sparsities,
            calib_size=calib_size,
            scope=getattr(spec, "scope", "global"),
            flags=names,
        )
    except ValueError as err:
        return [str(err)]
    return checkpoint_problems(spec)
