"""oViT / CAP: correlation-aware greedy OBS elimination per Fisher block, exact joint OBS update.

Cost of a weight = its block's cumulative OBS loss at the step the weight is eliminated, so one global
threshold picks a prefix of every block's elimination order. apply() reuses the elimination's downdates
(kept within the Pruner's cache) instead of solving again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ovit_ray.pruning.methods._registry import register_method
from ovit_ray.pruning.methods.base import PruningMethod, TensorPlan

if TYPE_CHECKING:
    import torch

    from ovit_ray.pruning.pruner import Pruner


@register_method
class OViT(PruningMethod):
    """The paper's method; `update_weights = False` gives its ablation (ovit-noupdate)."""

    name = "ovit"
    update_weights: ClassVar[bool] = True

    def plan(self, pruner: Pruner, name: str) -> TensorPlan:
        import torch

        from ovit_ray.tensor_math.elimination import Elimination, elimination_steps, greedy_eliminate
        from ovit_ray.tensor_math.selection import order_layout_to_positions

        weights, pattern = pruner.blocks(name), pruner.settings.nm
        group_size, group_quota = (None, None) if pattern is None else (pattern[1], pattern[1] - pattern[0])
        n, block = weights.shape
        steps = elimination_steps(block, group_size, group_quota)
        downdates = None
        if self.update_weights and pruner.reserve_cache(n * steps * block * weights.dtype.itemsize):
            downdates = weights.new_empty(n, steps, block)

        def eliminate(chunk: slice, inverse: torch.Tensor) -> Elimination:
            return greedy_eliminate(
                weights[chunk],
                inverse,
                update_weights=True,
                downdates=None if downdates is None else downdates[chunk],
                group_size=group_size,
                group_quota=group_quota,
            )

        results = pruner.map_inverse_chunks(name, eliminate)
        orders = [r.order for r in results]
        losses = [r.losses for r in results]
        coeffs = [r.coeffs for r in results if r.coeffs is not None]
        order, costs = torch.cat(orders), torch.cat(losses)
        pruned_before = pruner.already_pruned(name)
        costs = costs.masked_fill(pruned_before.gather(1, order), float("-inf"))
        valid = pruner.valid(name).gather(1, order)
        fixed = None
        if pattern is not None:
            fixed = order_layout_to_positions(valid, order, block) | pruned_before
        return TensorPlan(
            costs=costs,
            valid=valid,
            order=order,
            fixed_pruned=fixed,
            downdates=downdates,
            coeffs=None if downdates is None else torch.cat(coeffs),
        )

    def write(self, pruner: Pruner, name: str, plan: TensorPlan, pruned: torch.Tensor) -> torch.Tensor:
        """Exact joint OBS weights: from plan's downdates where a block's pruned set is a prefix of its elimination
        order (the usual case), else by a Cholesky solve of that block's Fisher (no downdates kept, or an N:M group
        or an old mask that put pruned weights outside the eliminated prefix)."""
        if not self.update_weights:
            return super().write(pruner, name, plan, pruned)
        import torch

        from ovit_ray.tensor_math.elimination import obs_update, prefix_weights
        from ovit_ray.tensor_math.fisher import fisher_from_sums

        weights = pruner.blocks(name)
        solve = torch.ones(weights.shape[0], dtype=torch.bool, device=weights.device)
        out = weights.masked_fill(pruned, 0)
        if plan.downdates is not None:
            assert plan.order is not None and plan.coeffs is not None  # plan() sets them with the downdates
            # Padding is eliminated too (first, at no cost), so it counts as pruned for the prefix test.
            gone = pruned | ~pruner.valid(name)
            in_order = gone.gather(1, plan.order)
            steps = in_order.sum(dim=1)
            solve = (steps != gone.sum(dim=1)) | (in_order[:, 1:] & ~in_order[:, :-1]).any(dim=1)
            out = prefix_weights(
                weights, plan.downdates, plan.coeffs, steps.masked_fill(solve, 0)
            ).masked_fill_(gone, 0)
        rows, fisher_sums = solve.nonzero().squeeze(1), pruner.fisher_sums()
        sums, settings = fisher_sums.sums[name], pruner.settings

        def solve_chunk(chunk: slice) -> torch.Tensor:
            part = rows[chunk]
            fisher = fisher_from_sums(sums[part], fisher_sums.count, settings.damp, settings.torch_dtype)
            return obs_update(weights[part], fisher, pruned[part])

        if len(rows):
            out[rows] = torch.cat(pruner.map_block_chunks(len(rows), sums.device, solve_chunk))
        return out
