"""Scores of structured pruning, cached on disk: they depend on the weights, the calibration batch and the
scorer's settings only, never on the budget, so every budget and every later job on the same model reuses them
(`<cache>/structured-scores/<hash>.pt`, loaded with `weights_only=True`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits
from ovit_ray.models import cache_dir
from ovit_ray.pruning.structured import OptinSettings, UnitScores, get_scorer


def calibration_batch(data: DatasetSplits, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` training images drawn with `seed`, and their labels (read only by a scorer that uses them)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randperm(len(data.train), generator=generator)[:size]  # type: ignore[arg-type]
    pairs = [data.train[int(i)] for i in picks]
    return torch.stack([image for image, _ in pairs]), torch.tensor([int(label) for _, label in pairs])


def calibration_images(data: DatasetSplits, size: int, seed: int) -> torch.Tensor:
    """The images of `calibration_batch` (what the label-free scorers take)."""
    return calibration_batch(data, size, seed)[0]


def fingerprint(model: nn.Module, images: torch.Tensor, what: str, labels: torch.Tensor | None = None) -> str:
    """Hash of the weights, the calibration images (and labels, where the scorer reads them) and `what`
    (the scorer and its settings)."""
    digest = hashlib.sha256(what.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for tensor in (images, labels) if labels is not None else (images,):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def cached_blob(path: Path, compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool, float]:
    """The tensors saved at `path`, else `compute()`d and saved atomically: (blob, from the cache, seconds
    spent computing now). Loaded with `weights_only=True`: a blob holds tensors, lists and dicts only."""
    if path.is_file():
        return torch.load(path, weights_only=True), True, 0.0
    began = time.perf_counter()
    blob = compute()
    seconds = time.perf_counter() - began
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return blob, False, seconds


def cached_scores(
    model: nn.Module,
    images: torch.Tensor,
    method: str,
    settings: OptinSettings,
    cache: Path | None = None,
    *,
    labels: torch.Tensor | None = None,
    progress: bool | None = None,
) -> tuple[UnitScores, bool, float]:
    """(scores, whether they came from the cache, seconds spent scoring now). `labels`: the images' labels,
    needed by a scorer that `uses_labels` (and then part of the cache key); `progress`: the scorer's bar."""
    scorer = get_scorer(method)
    key = fingerprint(model, images, f"{method}|{settings}", labels if scorer.uses_labels else None)
    path = (cache or cache_dir()) / "structured-scores" / f"{key}.pt"

    def compute() -> dict[str, Any]:
        scores = scorer.score(model, images, settings, labels=labels, progress=progress)
        return {"heads": list(scores.heads), "neurons": list(scores.neurons), "kd_scale": scores.kd_scale}

    blob, cached, seconds = cached_blob(path, compute)
    return (
        UnitScores(tuple(blob["heads"]), tuple(blob["neurons"]), {}, {}, float(blob["kd_scale"])),
        cached,
        seconds,
    )
