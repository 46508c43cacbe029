"""Measured inference speed of models: median and p90 seconds per batch, images/s, and the environment.

Speed-ups are measured, never inferred from FLOPs (issue 15). Models compared against each other are timed
in one interleaved loop: every run times each model once, in an order that rotates from run to run, so a
noisy neighbour on a shared machine slows them alike and the ratios stay meaningful even when the absolute
times drift.

How a run is timed: model in eval mode, `torch.inference_mode`, one fixed random batch already on the
device; on CUDA `torch.cuda.synchronize()` is called before the clock starts and before it stops (so the
kernels' time is counted, not their launch), and `cudnn.benchmark` is on. A `dtype` other than the model's
own is a model cast (a copy of the model and the input in that dtype), not autocast: that is what a bf16
deployment runs, and what `torch.sparse.to_sparse_semi_structured` weights need.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import nn

__all__ = ["SpeedComparison", "SpeedStats", "compare_models", "time_model"]


@dataclass(frozen=True)
class SpeedStats:
    """Seconds per batch of one model over the timed runs (warm-up excluded) and where they were measured."""

    seconds: tuple[float, ...]
    batch_size: int
    env: dict[str, object]  # torch, timm, threads, dtype, device, batch size, runs, ...: a Parquet/JSON row

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p90_s(self) -> float:
        if len(self.seconds) < 2:
            return self.seconds[0]
        return statistics.quantiles(self.seconds, n=10, method="inclusive")[8]

    @property
    def images_per_s(self) -> float:
        """Throughput from the median batch time."""
        return self.batch_size / self.median_s

    def row(self) -> dict[str, object]:
        """The statistics and the environment as one flat, JSON-ready row."""
        return {
            "median_s": self.median_s,
            "p90_s": self.p90_s,
            "images_per_s": self.images_per_s,
            **self.env,
        }


@dataclass(frozen=True)
class SpeedComparison:
    """Per-model statistics from one interleaved loop, and each model's speed-up over the first one
    (baseline median / model median, so 1.5 means 1.5x faster than the baseline)."""

    stats: dict[str, SpeedStats]
    speedups: dict[str, float]

    @property
    def baseline(self) -> str:
        return next(iter(self.stats))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def _environment(device: torch.device, dtype: torch.dtype, batch_size: int, warmup: int, runs: int) -> dict:
    env: dict[str, object] = {
        "torch": torch.__version__,
        "timm": metadata.version("timm"),
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "precision": "model cast",
        "device": device.type,
        "device_name": _device_name(device),
        "batch_size": batch_size,
        "warmup": warmup,
        "runs": runs,
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


@contextmanager
def _settings(device: torch.device, threads: int | None) -> Iterator[None]:
    """Intra-op threads (when given) and, on CUDA, cudnn autotuning for the timing; restored afterwards."""
    old_threads, old_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = device.type == "cuda" or old_benchmark
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_benchmark


def _prepared(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model itself when its floating parameters already live on `device` in `dtype`, else a moved
    copy, so the caller's weights are never cast or moved."""
    floats = [p for p in model.parameters() if p.is_floating_point()]
    if all(p.device == device and p.dtype == dtype for p in floats):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)


@contextmanager
def _evaluating(models: list[nn.Module]) -> Iterator[None]:
    """Eval mode for the timing, each model's own mode restored afterwards."""
    modes = [m.training for m in models]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)


def _batch(
    batch_size: int, image_size: int | None, example: torch.Tensor | None, in_chans: int
) -> torch.Tensor:
    """`example` (one image, C x H x W) repeated, or seeded random images of `image_size`."""
    if example is not None and image_size is None:
        if example.dim() != 3:
            raise ValueError(f"example must be one image (C, H, W), got shape {tuple(example.shape)}")
        return example[None].expand(batch_size, *example.shape).contiguous()
    if image_size is None or example is not None:
        raise ValueError("give exactly one of image_size and example")
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, in_chans, image_size, image_size, generator=generator)


def _timed(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    model(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compare_models(
    models: Mapping[str, nn.Module],
    *,
    batch_size: int,
    image_size: int | None = None,
    example: torch.Tensor | None = None,
    in_chans: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    warmup: int = 10,
    runs: int = 50,
    threads: int | None = None,
) -> SpeedComparison:
    """Time every model on the same batch in one interleaved loop (warm-up, then `runs` rounds, each timing
    every model once, the order rotating per round) and report the speed-ups over the first model."""
    if not models or batch_size < 1 or runs < 1 or warmup < 0:
        raise ValueError("need at least one model, batch_size >= 1, runs >= 1 and warmup >= 0")
    where = torch.device(device)
    names = list(models)
    ready = [_prepared(models[name], where, dtype) for name in names]
    with _settings(where, threads), _evaluating(ready), torch.inference_mode():
        x = _batch(batch_size, image_size, example, in_chans).to(device=where, dtype=dtype)
        for _ in range(warmup):
            for model in ready:
                _timed(model, x, where)
        seconds: list[list[float]] = [[] for _ in names]
        for run in range(runs):
            for step in range(len(names)):
                index = (run + step) % len(names)
                seconds[index].append(_timed(ready[index], x, where))
        env = _environment(where, dtype, batch_size, warmup, runs)
    stats = {
        name: SpeedStats(tuple(times), batch_size, {**env, "interleaved_with": len(names)})
        for name, times in zip(names, seconds, strict=True)
    }
    base = stats[names[0]].median_s
    return SpeedComparison(stats, {name: base / s.median_s for name, s in stats.items()})


def time_model(
    model: nn.Module,
    *,
    batch_size: int,
    image_size: int | None = None,
    example: torch.Tensor | None = None,
    in_chans: int = 3,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    warmup: int = 10,
    runs: int = 50,
    threads: int | None = None,
) -> SpeedStats:
    """Median and p90 seconds per batch of one model (see `compare_models` for how a run is timed)."""
    comparison = compare_models(
        {"model": model},
        batch_size=batch_size,
        image_size=image_size,
        example=example,
        in_chans=in_chans,
        device=device,
        dtype=dtype,
        warmup=warmup,
        runs=runs,
        threads=threads,
    )
    return comparison.stats["model"]
