"""The pruner: Fisher -> per-weight costs (plan, once) -> masks and updated weights (apply, per sparsity).

Every method reduces to a cost per weight and a way to write the surviving weights:
- ovit: cost = the block's cumulative OBS loss when the weight is eliminated greedily; exact joint OBS update;
- ovit-noupdate: the same selection, survivors left as they are (ablation);
- woodfisher: cost = independent saliency w^2 / (2 H_jj); sum of single-weight OBS updates;
- magnitude: cost = |w|; no update.
One global threshold over all tensors (or one per tensor in "uniform" scope) prunes exactly round(s * d).
oViT's apply reuses the elimination's downdates (kept within `apply_cache_bytes`) instead of solving again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ovit_ray.pruning.gradients import FisherSums, LossFn, collect_fisher
from ovit_ray.pruning.masks import MaskSet
from ovit_ray.pruning.settings import DTYPES, PruneSettings
from ovit_ray.tensor_math.blocks import from_blocks, to_blocks, valid_mask
from ovit_ray.tensor_math.chunking import elimination_rows
from ovit_ray.tensor_math.elimination import (
    default_panel,
    greedy_eliminate,
    obs_update,
    prefix_weights,
    woodfisher_saliency,
    woodfisher_update,
)
from ovit_ray.tensor_math.fisher import fisher_from_sums, invert_spd
from ovit_ray.tensor_math.selection import (
    nm_prune_mask,
    order_layout_to_positions,
    select_smallest,
    target_count,
)


@dataclass
class _TensorPlan:
    costs: torch.Tensor  # (n, steps) along the elimination order for ovit, else (n, B) by position
    valid: torch.Tensor  # same layout as costs; False on padding
    order: torch.Tensor | None  # (n, steps) positions in elimination order (ovit methods only)
    fixed_pruned: torch.Tensor | None  # (n, B) pruned set of an N:M pattern, independent of sparsity
    downdates: torch.Tensor | None = (
        None  # (n, steps, B) elimination downdates u_t (ovit, within the cache cap)
    )
    coeffs: torch.Tensor | None = None  # (n, steps) their coefficients: w_k = w_0 - sum_{t<k} coeffs_t u_t


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
        self.apply_cache_bytes = apply_cache_bytes
        self.original = {name: p.detach().clone() for name, p in self.params.items()}
        self.fisher: FisherSums | None = None
        self._plans: dict[str, _TensorPlan] = {}

    # -- Fisher ---------------------------------------------------------------------------------
    def collect(
        self, batches: Iterable, *, loss_fn: LossFn = nn.functional.cross_entropy, progress: bool = False
    ) -> None:
        """Accumulate the empirical Fisher from `settings.num_grads` mini-batches (skipped for magnitude)."""
        if self.settings.uses_fisher:
            self.fisher = collect_fisher(
                self.model,
                self.params,
                self.masks,
                batches,
                num_grads=self.settings.num_grads,
                block_size=self.settings.block_size,
                loss_fn=loss_fn,
                dtype=DTYPES[self.settings.fisher_dtype],
                progress=progress,
            )

    def _inverse_chunks(self, name: str) -> Iterator[tuple[slice, torch.Tensor]]:
        """Inverse dampened Fisher blocks of one tensor in elimination-sized chunks, in the compute dtype.

        The inverse is formed in the sums' precision when that is higher (float64 sums, float32 elimination):
        1/lambda ~ 1e7..1e8 makes the factorisation the precision-critical step, not the elimination.
        """
        if self.fisher is None:
            raise RuntimeError("collect() must run before plan() for Fisher-based methods")
        sums, dtype = self.fisher.sums[name], self.settings.torch_dtype
        rows = self._chunk_rows(sums.device)
        for start in range(0, sums.shape[0], rows):
            chunk = slice(start, start + rows)
            fisher = fisher_from_sums(
                sums[chunk], self.fisher.count, self.settings.damp, self._work_dtype(sums)
            )
            yield chunk, invert_spd(fisher).to(dtype)

    def _work_dtype(self, sums: torch.Tensor) -> torch.dtype:
        dtype = self.settings.torch_dtype
        return sums.dtype if sums.dtype.itemsize > dtype.itemsize else dtype

    def _chunk_rows(self, device: torch.device) -> int:
        block, dtype = self.settings.block_size, self.settings.torch_dtype
        if self.settings.chunk_bytes is not None:
            return max(1, self.settings.chunk_bytes // (block * block * dtype.itemsize))
        return elimination_rows(block, dtype, device, default_panel(block))

    def _blocks(self, name: str) -> torch.Tensor:
        return to_blocks(
            self.original[name].reshape(-1).to(self.settings.torch_dtype), self.settings.block_size
        )

    def _already_pruned(self, name: str) -> torch.Tensor:
        return to_blocks(
            ~self.masks[name].reshape(-1).to(self.original[name].device), self.settings.block_size
        )

    # -- plan -----------------------------------------------------------------------------------
    def plan(self) -> None:
        """Rank every prunable weight once; the expensive part, shared by all target sparsities."""
        self._cache_left = self.apply_cache_bytes
        plan_one = {
            "ovit": self._plan_ovit,
            "ovit-noupdate": self._plan_ovit,
            "woodfisher": self._plan_woodfisher,
            "magnitude": self._plan_magnitude,
        }[self.settings.method]
        self._plans = {name: plan_one(name) for name in self.params}

    def _plan_ovit(self, name: str) -> _TensorPlan:
        weights, pattern = self._blocks(name), self.settings.pattern
        group_args = (
            {} if pattern is None else {"group_size": pattern[1], "group_quota": pattern[1] - pattern[0]}
        )
        n, block = weights.shape
        steps = block if pattern is None else block // pattern[1] * group_args["group_quota"]
        downdates = None
        if self.settings.method == "ovit" and n * steps * block * weights.dtype.itemsize <= self._cache_left:
            downdates = weights.new_empty(n, steps, block)
            self._cache_left -= downdates.numel() * downdates.dtype.itemsize
        orders, losses, coeffs = [], [], []
        for chunk, inverse in self._inverse_chunks(name):
            result = greedy_eliminate(
                weights[chunk],
                inverse,
                update_weights=True,
                downdates=None if downdates is None else downdates[chunk],
                **group_args,
            )
            orders.append(result.order)
            losses.append(result.losses)
            coeffs.append(result.coeffs)
        order, costs = torch.cat(orders), torch.cat(losses)
        pruned_before = self._already_pruned(name)
        costs = costs.masked_fill(pruned_before.gather(1, order), float("-inf"))
        valid = valid_mask(self.original[name].numel(), self.settings.block_size, order.device).gather(
            1, order
        )
        fixed = None
        if pattern is not None:
            fixed = order_layout_to_positions(valid, order, self.settings.block_size) | pruned_before
        return _TensorPlan(
            costs=costs,
            valid=valid,
            order=order,
            fixed_pruned=fixed,
            downdates=downdates,
            coeffs=None if downdates is None else torch.cat(coeffs),
        )

    def _plan_by_position(self, name: str, scores: torch.Tensor) -> _TensorPlan:
        """Plan for methods whose cost is a per-position score (higher = more important)."""
        pruned_before = self._already_pruned(name)
        valid = valid_mask(self.original[name].numel(), self.settings.block_size, scores.device)
        fixed = None
        if self.settings.pattern is not None:
            keep, group = self.settings.pattern
            fixed = (
                nm_prune_mask(scores.reshape(-1), keep, group).reshape(scores.shape) | pruned_before
            ) & valid
        return _TensorPlan(scores.masked_fill(pruned_before, float("-inf")), valid, None, fixed)

    def _plan_woodfisher(self, name: str) -> _TensorPlan:
        weights = self._blocks(name)
        saliency = torch.cat(
            [woodfisher_saliency(weights[c], inverse) for c, inverse in self._inverse_chunks(name)]
        )
        return self._plan_by_position(name, saliency)

    def _plan_magnitude(self, name: str) -> _TensorPlan:
        return self._plan_by_position(name, self._blocks(name).abs())

    # -- apply ----------------------------------------------------------------------------------
    def apply(self, sparsity: float | None = None) -> MaskSet:
        """Prune to `sparsity` (implied by the N:M pattern when one is set); returns the new masks."""
        if not self._plans:
            raise RuntimeError("plan() must run before apply()")
        pruned = self._select(sparsity)
        new_masks = {}
        for name, param in self.params.items():
            weights = self._write_weights(name, pruned[name])
            numel = param.numel()
            with torch.no_grad():
                param.copy_(from_blocks(weights, numel).reshape(param.shape).to(param.dtype))
            new_masks[name] = ~from_blocks(pruned[name], numel).reshape(param.shape)
        return MaskSet(new_masks)

    def _select(self, sparsity: float | None) -> dict[str, torch.Tensor]:
        """Pruned positions (n, B) per tensor."""
        settings = self.settings
        if settings.pattern is not None:
            if sparsity is not None and abs(sparsity - settings.pattern_sparsity) > 1e-9:
                raise ValueError(
                    f"sparsity: {sparsity} conflicts with pattern {settings.pattern[0]}:{settings.pattern[1]}, "
                    f"which implies {settings.pattern_sparsity}"
                )
            return {name: plan.fixed_pruned for name, plan in self._plans.items()}
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

    def _write_weights(self, name: str, pruned: torch.Tensor) -> torch.Tensor:
        weights = self._blocks(name)
        method = self.settings.method
        if method in ("magnitude", "ovit-noupdate"):
            return weights.masked_fill(pruned, 0)
        if method == "ovit":
            return self._write_ovit(name, weights, pruned)
        return torch.cat(
            [woodfisher_update(weights[c], inverse, pruned[c]) for c, inverse in self._inverse_chunks(name)]
        )

    def _write_ovit(self, name: str, weights: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
        """Exact joint OBS weights: from plan's downdates where a block's pruned set is a prefix of its elimination
        order (the usual case), else by a Cholesky solve of that block's Fisher (no downdates kept, or an N:M group
        or an old mask that put pruned weights outside the eliminated prefix)."""
        plan, block = self._plans[name], self.settings.block_size
        solve = torch.ones(weights.shape[0], dtype=torch.bool, device=weights.device)
        out = weights.masked_fill(pruned, 0)
        if plan.downdates is not None:
            # Padding is eliminated too (first, at no cost), so it counts as pruned for the prefix test.
            gone = pruned | ~valid_mask(self.original[name].numel(), block, weights.device)
            in_order = gone.gather(1, plan.order)
            steps = in_order.sum(dim=1)
            solve = (steps != gone.sum(dim=1)) | (in_order[:, 1:] & ~in_order[:, :-1]).any(dim=1)
            out = prefix_weights(
                weights, plan.downdates, plan.coeffs, steps.masked_fill(solve, 0)
            ).masked_fill_(gone, 0)
        rows, sums = solve.nonzero().squeeze(1), self.fisher.sums[name]
        for part in rows.split(self._chunk_rows(sums.device)) if len(rows) else ():
            fisher = fisher_from_sums(
                sums[part], self.fisher.count, self.settings.damp, self.settings.torch_dtype
            )
            out[part] = obs_update(weights[part], fisher, pruned[part])
        return out

    def restore(self) -> None:
        """Put the weights captured at construction back (the dense model, in one-shot sweeps)."""
        with torch.no_grad():
            for name, param in self.params.items():
                param.copy_(self.original[name])
