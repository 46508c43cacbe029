"""Measured model speed (`ovit_ray.measure.speed`): sane statistics, the environment recorded, ratios from one
interleaved loop that see a model doing 4x the work, and a torch-free `ovit_ray.measure` import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from ovit_ray.measure.speed import compare_models, time_model

WIDTH = 3 * 16 * 16  # a 3 x 16 x 16 image, flattened


def _net(layers: int) -> nn.Module:
    """`layers` equal square GEMMs: the work scales with `layers`, the per-call overhead barely does."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), *[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])


def test_stats_are_sane_and_the_environment_is_recorded() -> None:
    model = _net(1).train()
    stats = time_model(model, batch_size=8, image_size=16, warmup=2, runs=7, threads=1)
    assert len(stats.seconds) == 7 and min(stats.seconds) > 0
    assert stats.p90_s >= stats.median_s > 0
    assert stats.images_per_s == pytest.approx(8 / stats.median_s)
    row = stats.row()
    for key in ("torch", "timm", "threads", "dtype", "device", "device_name", "batch_size", "runs", "warmup"):
        assert row[key] not in (None, ""), key
    assert (row["threads"], row["dtype"], row["device"], row["batch_size"], row["runs"]) == (
        1,
        "float32",
        "cpu",
        8,
        7,
    )
    assert row["torch"] == torch.__version__ and row["precision"] == "model cast"
    assert model.training  # timed in eval mode, the caller's mode restored


def test_four_times_the_work_is_measurably_slower_in_one_interleaved_loop() -> None:
    comparison = compare_models(
        {"light": _net(2), "heavy": _net(8)}, batch_size=128, image_size=16, warmup=2, runs=9, threads=1
    )
    assert comparison.baseline == "light"
    assert comparison.speedups["light"] == 1.0
    assert comparison.speedups["heavy"] < 0.5  # 4x the GEMMs: ideally 0.25
    assert all(len(s.seconds) == 9 and s.env["interleaved_with"] == 2 for s in comparison.stats.values())


def test_another_dtype_times_a_cast_copy_and_leaves_the_model_alone() -> None:
    model = _net(1)
    stats = time_model(model, batch_size=2, example=torch.randn(3, 16, 16), dtype=torch.bfloat16, runs=2)
    assert stats.env["dtype"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{}, {"image_size": 16, "example": torch.randn(3, 16, 16)}])
def test_input_is_given_exactly_once(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        time_model(_net(1), batch_size=1, runs=1, **kwargs)


def test_measure_package_imports_without_torch() -> None:
    """The CLI's --dry-run imports `ovit_ray.measure` and must not pay for torch."""
    code = "import sys, ovit_ray.measure; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
