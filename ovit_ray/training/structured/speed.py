"""The measured speed columns of a pruned model's row: the dense and the pruned model timed against each other
in one interleaved loop (`measure.speed.compare_models`), batch-1 latency and batch-N throughput."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ovit_ray.measure.speed import SpeedComparison, compare_models
from ovit_ray.training.setup import JobStart

Row = dict[str, Any]


@dataclass(frozen=True)
class SpeedSettings:
    """How the dense and the pruned model are timed against each other (interleaved, one loop)."""

    throughput_batch: int = 256
    latency_runs: int = 200
    throughput_runs: int = 20
    warmup: int = 5
    threads: int | None = None
    device: str = "cpu"


DEFAULT_SPEED = SpeedSettings()


def speed_columns(dense: nn.Module, pruned: nn.Module, start: JobStart, speed: SpeedSettings) -> Row:
    """Batch-1 latency and batch-N throughput of both models, each measured in one interleaved loop."""
    models = {"dense": dense, "pruned": pruned}

    def timed(batch_size: int, warmup: int, runs: int) -> SpeedComparison:
        return compare_models(
            models,
            batch_size=batch_size,
            image_size=start.data.image_size,
            in_chans=start.data.in_chans,
            device=speed.device,
            warmup=warmup,
            runs=runs,
            threads=speed.threads,
        )

    latency = timed(1, speed.warmup, speed.latency_runs)
    throughput = timed(speed.throughput_batch, min(speed.warmup, 2), speed.throughput_runs)
    env = throughput.stats["pruned"].env
    return {
        "latency_ms": 1e3 * latency.stats["pruned"].median_s,
        "latency_p90_ms": 1e3 * latency.stats["pruned"].p90_s,
        "latency_dense_ms": 1e3 * latency.stats["dense"].median_s,
        "throughput_ips": throughput.stats["pruned"].images_per_s,
        "throughput_dense_ips": throughput.stats["dense"].images_per_s,
        "speedup_latency": latency.speedups["pruned"],
        "speedup_throughput": throughput.speedups["pruned"],
        "speed_batch": speed.throughput_batch,
        "speed_threads": int(env["threads"]),  # type: ignore[call-overload]
        "speed_device": str(env["device_name"]),
        "torch_version": str(env["torch"]),
    }
