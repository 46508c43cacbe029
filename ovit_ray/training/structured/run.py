"""Structured pruning jobs: score heads and neurons once, then for every budget search, shrink, evaluate on
the test split and time the shrunk model against the dense one; optionally prune the shrunk model further
with an unstructured method (oViT, 2:4) and keep every model a row reports.

Scores come from `cache` (computed once per model, calibration batch and settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits
from ovit_ray.models import save_checkpoint
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
    LatencyTable,
    OptinSettings,
    UnitMasks,
    VitCosts,
    Widths,
    lsq_rescale,
    masked,
    measure_latency,
    merge_tokens,
    merging,
    search_flops,
    search_latency,
    shrink,
    shrunk_sizes,
)
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.setup import JobStart
from ovit_ray.training.structured.cache import cached_scores, calibration_batch
from ovit_ray.training.structured.speed import DEFAULT_SPEED, SpeedSettings, speed_columns

Row = dict[str, Any]


@dataclass(frozen=True)
class StructuredJob:
    """One structured prune: the scorer, the budget (a ratio of the dense MACs) and what follows it."""

    method: str  # a structured method, or "none": only the `then` step (unstructured on the same axes)
    flops_ratio: float
    # Budget as a share of the dense batch-1 latency instead, from per-layer tables measured on the device.
    latency_ratio: float | None = None
    recover: str = "none"  # or "lsq": PTF-style least-squares rescaling of the kept units, folded in
    token_share: float = 0.0  # part of the MAC reduction taken by merging tokens (ToMe-style)
    round_to: int = 1  # kept MLP widths are multiples of it
    calib_size: int = 32
    seed: int = 0  # draws the calibration batch, OPTIN's Gram token subsets and `random`'s scores
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
                f"p{self.then.nm[0]}of{self.then.nm[1]}" if self.then.nm else ""
            )
        shape = (f"-t{self.token_share:.2f}" if self.token_share else "") + (
            f"-r{self.round_to}" if self.round_to > 1 else ""
        )
        budget = (
            f"l{self.latency_ratio:.3f}" if self.latency_ratio is not None else f"f{self.flops_ratio:.3f}"
        )
        recover = "" if self.recover == "none" else f"-{self.recover}"
        return f"{self.method}-{budget}{shape}{recover}-seed{self.seed}{after}"


@dataclass(frozen=True)
class _Plan:
    masks: UnitMasks
    widths: Widths
    merges: tuple[int, ...]
    columns: Row  # what the budget asked and got
    scores_cached: bool = False
    score_seconds: float = 0.0


def _plan(
    dense: nn.Module,
    calibration: tuple[torch.Tensor, torch.Tensor],
    job: StructuredJob,
    costs: VitCosts,
    latency_table: Callable[[], LatencyTable],
    cache: Path | None,
    progress: bool | None,
) -> _Plan:
    """The job's kept units (all of them for method "none") under its MACs or latency budget, scored on the
    calibration (images, labels)."""
    if job.method == "none":
        return _Plan(
            UnitMasks.dense(dense), costs.widths, (0,) * len(costs.widths.heads), {"flops_ratio": 1.0}
        )
    settings = OptinSettings(**{**asdict(job.optin), "seed": job.seed})
    images, labels = calibration
    scores, cached, seconds = cached_scores(
        dense, images, job.method, settings, cache, labels=labels, progress=progress
    )
    if job.latency_ratio is not None:
        by_time = search_latency(
            scores.heads, scores.neurons, latency_table(), job.latency_ratio, job.round_to
        )
        columns: Row = {"latency_ratio": job.latency_ratio, "estimated_latency_ratio": by_time.achieved_ratio}
        masks, widths = by_time.masks, by_time.widths
    else:
        found = search_flops(
            scores.heads,
            scores.neurons,
            costs,
            job.flops_ratio,
            round_to=job.round_to,
            token_share=job.token_share,
        )
        columns = {"flops_ratio": job.flops_ratio, "achieved_token_share": found.token_share}
        masks, widths = found.masks, found.widths
    merges = widths.merged or (0,) * len(widths.heads)
    return _Plan(masks, widths, merges, columns, cached, seconds)


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
    speed: SpeedSettings | None = DEFAULT_SPEED,
    eval_batch_size: int = 256,
    cache: Path | None = None,
    on_row: Callable[[Row], None] | None = None,
    progress: bool | None = None,
) -> list[Row]:
    """Run every job on `start.model` (left unchanged) and return one row each; each pruned model is kept
    as `<out>/models/<run_key>.safetensors` (weights, masks, the shrunk sizes to rebuild it, and the
    `identity` meta, dataset and split seed, that `ovit-ray export` / `evaluate` read). `progress`: a bar
    with ETA while a slow scorer (OPTIN) runs (None: when stderr is a terminal)."""
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
    tables: list[LatencyTable] = []  # measured on first use, shared by every latency budget

    def latency_table() -> LatencyTable:
        if not tables:
            tables.append(measure_latency(dense, batch_size=1, device=device))
        return tables[0]

    rows: list[Row] = []
    for job in jobs:
        images, labels = (t.to(device) for t in calibration_batch(start.data, job.calib_size, job.seed))
        plan = _plan(dense, (images, labels), job, costs, latency_table, cache, progress)
        with masked(dense, plan.masks), merging(dense, plan.merges):
            masked_top1 = top1(dense)[0]
        small = shrink(dense, plan.masks).eval()
        if job.recover == "lsq":
            lsq_rescale(dense, small, images)
        if any(plan.merges):
            merge_tokens(small, plan.merges)
        macs, dense_macs = costs.macs(plan.widths), costs.macs()
        row: Row = {
            "run_key": job.run_key,
            "model": model_name,
            "method": job.method,
            "flops_ratio": None,
            **plan.columns,
            "achieved_flops_ratio": macs / dense_macs,
            "token_share": job.token_share,
            "merge_r": list(plan.merges),
            "round_to": job.round_to,
            "recover": job.recover,
            "heads_kept": list(plan.widths.heads),
            "neurons_kept": list(plan.widths.neurons),
            "gmacs": macs / 1e9,
            "gmacs_dense": dense_macs / 1e9,
            "gmacs_sparse": macs / 1e9,
            "params": costs.params(plan.widths),
            "params_dense": costs.params(),
            "params_nonzero": costs.params(plan.widths),
            "achieved_sparsity": 0.0,
            "calib_size": job.calib_size,
            "seed": job.seed,
            "score_seconds": plan.score_seconds,
            "scores_cached": plan.scores_cached,
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
                then_pattern=job.then.pattern,
                then_sparsity=job.then.pattern_sparsity if job.then_sparsity is None else job.then_sparsity,
                achieved_sparsity=found_masks.sparsity(),
                params_nonzero=counts.params_nonzero,
                # the analytic MACs less the multiply-adds of the pruned weights (2 FLOPs each per token)
                gmacs_sparse=(macs - (counts.flops_dense - counts.flops_nonzero) / 2) / 1e9,
            )
        row["top1"], row["val_top1"] = top1(small)
        if speed is not None:
            row.update(speed_columns(dense, small, start, speed))
        path = out / "models" / f"{job.run_key}.safetensors"
        meta = {
            **(identity or {}),
            "model": model_name,
            "method": job.method,
            "run_key": job.run_key,
            "structure": {**shrunk_sizes(small), "merge_r": list(plan.merges)},
            "num_classes": start.data.num_classes,
            "image_size": start.data.image_size,
        }
        row["checkpoint"] = str(save_checkpoint(path, small, masks, meta).resolve())
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows
