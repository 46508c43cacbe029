"""Structured pruning jobs: score heads and neurons once, then for every budget search, shrink, evaluate on
the test split and time the shrunk model against the dense one; optionally prune the shrunk model further
with an unstructured method (oViT, 2:4) and keep every model a row reports.

Scores depend on the weights, the calibration batch and the scorer's settings only, never on the budget,
so they are computed once and cached on disk (`<cache>/structured-scores/<hash>.pt`); every budget and
every later job on the same model reuses them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits
from ovit_ray.measure.speed import SpeedComparison, compare_models
from ovit_ray.models import cache_dir, save_checkpoint
from ovit_ray.pruning import (
    DEFAULT_PATTERNS,
    Accounting,
    MaskSet,
    Pruner,
    PruneSettings,
    count_params_and_flops,
    select_prunable,
)
from ovit_ray.pruning.structured import (
    OptinSettings,
    SearchResult,
    UnitMasks,
    UnitScores,
    VitCosts,
    get_scorer,
    masked,
    merge_tokens,
    merging,
    search_flops,
    shrink,
    shrunk_sizes,
)
from ovit_ray.training.loop import evaluate, make_loader
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


@dataclass(frozen=True)
class StructuredJob:
    """One structured prune: the scorer, the budget (a ratio of the dense MACs) and what follows it."""

    method: str  # a structured method, or "none": only the `then` step (unstructured on the same axes)
    flops_ratio: float
    token_share: float = 0.0  # part of the MAC reduction taken by merging tokens (ToMe-style)
    round_to: int = 1  # kept MLP widths are multiples of it
    calib_size: int = 32
    seed: int = 0  # draws the calibration images and OPTIN's Gram token subsets
    optin: OptinSettings = field(default_factory=OptinSettings)
    then: PruneSettings | None = None  # unstructured pruning of the shrunk model
    then_sparsity: float | None = None  # None with an N:M pattern in `then`

    @property
    def run_key(self) -> str:
        """Names the row and the kept model file: what differs between two jobs on one model."""
        after = ""
        if self.then is not None:
            amount = self.then.pattern_sparsity if self.then_sparsity is None else self.then_sparsity
            after = f"-{self.then.method}{amount:.2f}" + (
                f"p{self.then.pattern[0]}of{self.then.pattern[1]}" if self.then.pattern else ""
            )
        shape = (f"-t{self.token_share:.2f}" if self.token_share else "") + (
            f"-r{self.round_to}" if self.round_to > 1 else ""
        )
        return f"{self.method}-f{self.flops_ratio:.3f}{shape}-seed{self.seed}{after}"


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


def _speed_columns(dense: nn.Module, pruned: nn.Module, start: JobStart, speed: SpeedSettings) -> Row:
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


def _search(
    dense: nn.Module,
    data: DatasetSplits,
    job: StructuredJob,
    costs: VitCosts,
    device: str,
    cache: Path | None,
) -> tuple[SearchResult, bool, float]:
    """The job's kept units (all of them for method "none"), whether the scores were cached, scoring seconds."""
    if job.method == "none":
        full = UnitMasks.dense(dense)
        macs = costs.macs()
        return SearchResult(full, costs.widths, float(macs), macs, macs, 0.0), False, 0.0
    images = calibration_images(data, job.calib_size, job.seed).to(device)
    settings = OptinSettings(**{**asdict(job.optin), "seed": job.seed})
    scores, cached, seconds = cached_scores(dense, images, job.method, settings, cache)
    found = search_flops(
        scores.heads,
        scores.neurons,
        costs,
        job.flops_ratio,
        round_to=job.round_to,
        token_share=job.token_share,
    )
    return found, cached, seconds


def _prune_further(
    small: nn.Module, data: DatasetSplits, job: StructuredJob, device: str
) -> tuple[MaskSet, Accounting]:
    """Unstructured pruning of the shrunk model in place (weights updated, pruned ones zeroed): its masks
    and the nonzero count of what is left."""
    assert job.then is not None
    params = select_prunable(small, DEFAULT_PATTERNS)
    pruner = Pruner(small, params, MaskSet.dense(params), job.then)
    pruner.collect(make_loader(data.train, job.then.grad_batch_size, shuffle=True, seed=job.seed))
    pruner.plan()
    masks = pruner.apply(job.then_sparsity)
    masks.apply(small)
    return masks, count_params_and_flops(small, masks, (data.in_chans, data.image_size, data.image_size))


def structured_rows(
    start: JobStart,
    jobs: Sequence[StructuredJob],
    out: Path,
    *,
    model_name: str,
    identity: dict[str, Any] | None = None,
    speed: SpeedSettings | None = SpeedSettings(),
    eval_batch_size: int = 256,
    cache: Path | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run every job on `start.model` (left unchanged) and return one row each; each pruned model is kept
    as `<out>/models/<run_key>.safetensors` (weights, masks, the shrunk sizes to rebuild it, and the
    `identity` meta, dataset and split seed, that `ovit-ray export` / `evaluate` read)."""
    device = speed.device if speed else "cpu"
    dense = start.model.to(device).eval()
    loaders = {
        split: make_loader(getattr(start.data, split), eval_batch_size, shuffle=False, seed=0)
        for split in ("test", "val")
    }

    def top1(model: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            return tuple(evaluate(model, loaders[s], device=device)["top1"] for s in ("test", "val"))  # type: ignore[return-value]

    dense_top1, dense_val = top1(dense)
    costs = VitCosts.of(dense)
    rows: list[Row] = []
    for job in jobs:
        found, cached, score_seconds = _search(dense, start.data, job, costs, device, cache)
        merges = found.widths.merged or (0,) * len(found.widths.heads)
        with masked(dense, found.masks), merging(dense, merges):
            masked_top1 = top1(dense)[0]
        small = shrink(dense, found.masks).eval()
        if any(merges):
            merge_tokens(small, merges)
        row: Row = {
            "run_key": job.run_key,
            "model": model_name,
            "method": job.method,
            "flops_ratio": job.flops_ratio,
            "achieved_flops_ratio": found.achieved_ratio,
            "token_share": job.token_share,
            "achieved_token_share": found.token_share,
            "merge_r": list(merges),
            "round_to": job.round_to,
            "heads_kept": list(found.widths.heads),
            "neurons_kept": list(found.widths.neurons),
            "gmacs": found.achieved_macs / 1e9,
            "gmacs_dense": found.dense_macs / 1e9,
            "gmacs_sparse": found.achieved_macs / 1e9,
            "params": costs.params(found.widths),
            "params_dense": costs.params(),
            "params_nonzero": costs.params(found.widths),
            "achieved_sparsity": 0.0,
            "calib_size": job.calib_size,
            "seed": job.seed,
            "score_seconds": score_seconds,
            "scores_cached": cached,
            "top1_masked": masked_top1,
            "top1_dense": dense_top1,
            "val_top1_dense": dense_val,
            "model_source": start.source,
        }
        masks: dict[str, torch.Tensor] = {}
        if job.then is not None:
            found_masks, counts = _prune_further(small, start.data, job, device)
            masks = found_masks.state_dict()
            row.update(
                then_method=job.then.method,
                then_pattern=None if job.then.pattern is None else "{}:{}".format(*job.then.pattern),
                then_sparsity=job.then.pattern_sparsity if job.then_sparsity is None else job.then_sparsity,
                achieved_sparsity=found_masks.sparsity(),
                params_nonzero=counts.params_nonzero,
                # the analytic MACs less the multiply-adds of the pruned weights (2 FLOPs each per token)
                gmacs_sparse=(found.achieved_macs - (counts.flops_dense - counts.flops_nonzero) / 2) / 1e9,
            )
        row["top1"], row["val_top1"] = top1(small)
        if speed is not None:
            row.update(_speed_columns(dense, small, start, speed))
        path = out / "models" / f"{job.run_key}.safetensors"
        meta = {
            **(identity or {}),
            "model": model_name,
            "method": job.method,
            "run_key": job.run_key,
            "structure": {**shrunk_sizes(small), "merge_r": list(merges)},
            "num_classes": start.data.num_classes,
            "image_size": start.data.image_size,
        }
        row["checkpoint"] = str(save_checkpoint(path, small, masks, meta).resolve())
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
