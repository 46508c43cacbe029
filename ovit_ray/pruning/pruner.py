"""The pruner: Fisher -> per-weight costs (plan, once) -> masks and updated weights (apply, per sparsity).

Every method (`ovit_ray.pruning.methods`) reduces to a cost per weight and a way to write the surviving
weights; the Pruner owns what they share: the Fisher and its inverse in cache-sized chunks, blocks, masks,
and one global threshold over all tensors (or one per tensor in "uniform" scope) that prunes exactly
round(s * d).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import torch
from torch import nn

from ovit_ray.pruning.gradients import FisherSums, LossFn, collect_fisher
from ovit_ray.pruning.masks import MaskSet
from ovit_ray.pruning.methods import TensorPlan, get_method
from ovit_ray.pruning.settings import PruneSettings, dtype_of
from ovit_ray.pruning.threads import chunk_workers, map_chunks
from ovit_ray.tensor_math.blocks import from_blocks, to_blocks, valid_mask
from ovit_ray.tensor_math.chunking import elimination_rows, even_chunks
from ovit_ray.tensor_math.elimination import default_panel
from ovit_ray.tensor_math.fisher import inverse_fisher
from ovit_ray.tensor_math.selection import (
    nm_prune_mask,
    order_layout_to_positions,
    select_smallest,
    target_count,
)

T = TypeVar("T")


class Pruner:
    """Prunes `params` of `model` by `settings.method`, starting from the weights and masks given here.

    collect() builds the Fisher, plan() ranks weights once, apply(s) can then be called for several
    sparsities: each call starts again from the weights captured at construction. `apply_cache_bytes` caps
    the memory plan() may keep (the elimination's downdates, d * B floats per tensor) so that apply() of
    ovit needs no second factorisation; tensors beyond the cap are applied by the exact OBS solve.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, nn.Parameter],
        masks: MaskSet,
        settings: PruneSettings,
        *,
        apply_cache_bytes: int = 2**29,
    ):
        self.model, self.params, self.masks, self.settings = model, dict(params), masks, settings
        self.method = get_method(settings.method)
        self.apply_cache_bytes = apply_cache_bytes
        self.original = {name: p.detach().clone() for name, p in self.params.items()}
        self.fisher: FisherSums | None = None
        self._plans: dict[str, TensorPlan] = {}
        self._cache_left = apply_cache_bytes

    # -- Fisher ---------------------------------------------------------------------------------
    def collect(
        self, batches: Iterable, *, loss_fn: LossFn = nn.functional.cross_entropy, progress: bool = False
    ) -> None:
        """Accumulate the empirical Fisher from `settings.num_grads` mini-batches (skipped for methods without)."""
        if self.method.needs_fisher:
            self.fisher = collect_fisher(
                self.model,
                self.params,
                self.masks,
                batches,
                num_grads=self.settings.num_grads,
                block_size=self.settings.block_size,
                loss_fn=loss_fn,
                dtype=dtype_of(self.settings.fisher_dtype),
                progress=progress,
            )

    def fisher_sums(self) -> FisherSums:
        if self.fisher is None:
            raise RuntimeError("collect() must run before plan() for Fisher-based methods")
        return self.fisher

    # -- what methods build on ------------------------------------------------------------------
    def map_inverse_chunks(self, name: str, fn: Callable[[slice, torch.Tensor], T]) -> list[T]:
        """fn(chunk, inverse) for the inverse dampened Fisher blocks of one tensor, in elimination-sized chunks
        (in order; on the CPU several chunks at once, `pruning.threads`), in the compute dtype.

        The inverse is formed in the sums' precision when that is higher (float64 sums, float32 elimination):
        1/lambda ~ 1e7..1e8 makes the factorisation the precision-critical step, not the elimination.
        """
        fisher = self.fisher_sums()
        sums, dtype, damp = fisher.sums[name], self.settings.torch_dtype, self.settings.damp
        work_dtype = self._work_dtype(sums)

        def run(chunk: slice) -> T:
            return fn(chunk, inverse_fisher(sums[chunk], fisher.count, damp, work_dtype).to(dtype))

        return self.map_block_chunks(sums.shape[0], sums.device, run)

    def map_block_chunks(self, count: int, device: torch.device, fn: Callable[[slice], T]) -> list[T]:
        """fn(chunk) over `count` Fisher blocks in elimination-sized chunks, several at once on the CPU."""
        workers = chunk_workers(device)
        return map_chunks(fn, even_chunks(count, self.chunk_rows(device), workers), workers)

    def _work_dtype(self, sums: torch.Tensor) -> torch.dtype:
        dtype = self.settings.torch_dtype
        return sums.dtype if sums.dtype.itemsize > dtype.itemsize else dtype

    def chunk_rows(self, device: torch.device) -> int:
        """Fisher blocks per chunk: `settings.chunk_bytes`, or sized from B and the cache."""
        block, dtype = self.settings.block_size, self.settings.torch_dtype
        if self.settings.chunk_bytes is not None:
            return max(1, self.settings.chunk_bytes // (block * block * dtype.itemsize))
        return elimination_rows(block, dtype, device, default_panel(block))

    def blocks(self, name: str) -> torch.Tensor:
        """The tensor's weights as captured at construction, (n, B) in the compute dtype, zero-padded."""
        return to_blocks(
            self.original[name].reshape(-1).to(self.settings.torch_dtype), self.settings.block_size
        )

    def valid(self, name: str) -> torch.Tensor:
        """(n, B) bool, False on the padding of `blocks(name)`."""
        original = self.original[name]
        return valid_mask(original.numel(), self.settings.block_size, original.device)

    def already_pruned(self, name: str) -> torch.Tensor:
        return to_blocks(
            ~self.masks[name].reshape(-1).to(self.original[name].device), self.settings.block_size
        )

    def reserve_cache(self, nbytes: int) -> bool:
        """Claim `nbytes` of `apply_cache_bytes` for state plan() keeps for apply(); False if it does not fit."""
        if nbytes > self._cache_left:
            return False
        self._cache_left -= nbytes
        return True

    def plan_by_position(self, name: str, scores: torch.Tensor) -> TensorPlan:
        """Plan for methods whose cost is a per-position score (n, B), higher = more important."""
        pruned_before = self.already_pruned(name)
        valid = self.valid(name)
        fixed = None
        if self.settings.nm is not None:
            keep, group = self.settings.nm
            fixed = (
                nm_prune_mask(scores.reshape(-1), keep, group).reshape(scores.shape) | pruned_before
            ) & valid
        return TensorPlan(scores.masked_fill(pruned_before, float("-inf")), valid, None, fixed)

    # -- plan -----------------------------------------------------------------------------------
    def plan(self) -> None:
        """Rank every prunable weight once; the expensive part, shared by all target sparsities."""
        self._cache_left = self.apply_cache_bytes
        self._plans = {name: self.method.plan(self, name) for name in self.params}

    # -- apply ----------------------------------------------------------------------------------
    def apply(self, sparsity: float | None = None) -> MaskSet:
        """Prune to `sparsity` (implied by the N:M pattern when one is set); returns the new masks."""
        if not self._plans:
            raise RuntimeError("plan() must run before apply()")
        pruned = self._select(sparsity)
        new_masks = {}
        for name, param in self.params.items():
            weights = self.method.write(self, name, self._plans[name], pruned[name])
            numel = param.numel()
            with torch.no_grad():
                param.copy_(from_blocks(weights, numel).reshape(param.shape).to(param.dtype))
            new_masks[name] = ~from_blocks(pruned[name], numel).reshape(param.shape)
        return MaskSet(new_masks)

    def _select(self, sparsity: float | None) -> dict[str, torch.Tensor]:
        """Pruned positions (n, B) per tensor."""
        settings = self.settings
        implied = settings.pattern_sparsity
        if implied is not None:
            if sparsity is not None and abs(sparsity - implied) > 1e-9:
                raise ValueError(
                    f"sparsity: {sparsity} conflicts with pattern {settings.pattern}, which implies {implied}"
                )
            fixed = {
                name: plan.fixed_pruned for name, plan in self._plans.items() if plan.fixed_pruned is not None
            }
            if len(fixed) < len(self._plans):
                raise RuntimeError(f"method {settings.method!r} planned no N:M pruned set")
            return fixed
        if sparsity is None or not 0 <= sparsity < 1:
            raise ValueError(f"sparsity: must be in [0, 1), got {sparsity!r}")
        already, total = self.masks.counts()
        if target_count(sparsity, total) < already:
            raise ValueError(
                f"sparsity: {sparsity} is below the current sparsity {already / total:.4f}; masks never regrow"
            )
        names = list(self._plans)
        plans = [self._plans[n] for n in names]
        if settings.scope == "global":
            picked = select_smallest(
                [p.costs for p in plans], [p.valid for p in plans], target_count(sparsity, total)
            )
        else:  # per tensor; one already sparser than the target keeps its mask (masks never regrow)
            counts = [
                max(target_count(sparsity, self.params[n].numel()), int((~self.masks[n]).sum()))
                for n in names
            ]
            picked = [select_smallest([p.costs], [p.valid], k)[0] for p, k in zip(plans, counts, strict=True)]
        block = settings.block_size
        return {
            name: sel if plan.order is None else order_layout_to_positions(sel, plan.order, block)
            for name, plan, sel in zip(names, plans, picked, strict=True)
        }

    def restore(self) -> None:
        """Put the weights captured at construction back (the dense model, in one-shot sweeps)."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.original[name])
