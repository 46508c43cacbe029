"""Scores of structured pruning, cached on disk: they depend on the weights, the calibration batch and the
scorer's settings only, never on the budget, so every budget and every later job on the same model reuses them
(`<cache>/structured-scores/<hash>.pt`, loaded with `weights_only=True`)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch
from torch import nn

from ovit_ray.data import DatasetSplits
from ovit_ray.models import cache_dir
from ovit_ray.pruning.structured import OptinSettings, UnitScores, get_scorer


def calibration_images(data: DatasetSplits, size: int, seed: int) -> torch.Tensor:
    """`size` training images drawn with `seed` (label-free: only the images are used)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data.train), generator=generator)[:size]  # type: ignore[arg-type]
    return torch.stack([data.train[int(i)][0] for i in picks])


def _fingerprint(model: nn.Module, images: torch.Tensor, method: str, settings: OptinSettings) -> str:
    digest = hashlib.sha256(f"{method}|{settings}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def cached_scores(
    model: nn.Module, images: torch.Tensor, method: str, settings: OptinSettings, cache: Path | None = None
) -> tuple[UnitScores, bool, float]:
    """(scores, whether they came from the cache, seconds spent scoring now)."""
    path = (
        (cache or cache_dir()) / "structured-scores" / f"{_fingerprint(model, images, method, settings)}.pt"
    )
    if path.is_file():
        blob = torch.load(path, weights_only=True)
        return (
            UnitScores(tuple(blob["heads"]), tuple(blob["neurons"]), {}, {}, float(blob["kd_scale"])),
            True,
            0.0,
        )
    began = time.perf_counter()
    scores = get_scorer(method).score(model, images, settings)
    seconds = time.perf_counter() - began
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
    torch.save(
        {"heads": list(scores.heads), "neurons": list(scores.neurons), "kd_scale": scores.kd_scale}, tmp
    )
    tmp.replace(path)
    return scores, False, seconds
