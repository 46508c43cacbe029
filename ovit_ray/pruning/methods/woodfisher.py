"""WoodFisher / OBS: independent saliency w^2 / (2 H_jj), then the sum of single-weight OBS updates.

It ignores the correlations inside the pruned set, which is what oViT adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovit_ray.pruning.methods._registry import register_method
from ovit_ray.pruning.methods.base import PruningMethod, TensorPlan

if TYPE_CHECKING:
    import torch

    from ovit_ray.pruning.pruner import Pruner


@register_method
class WoodFisher(PruningMethod):
    """Diagonal-of-the-inverse OBS per Fisher block."""

    name = "woodfisher"

    def plan(self, pruner: Pruner, name: str) -> TensorPlan:
        import torch

        from ovit_ray.tensor_math.elimination import woodfisher_saliency

        weights = pruner.blocks(name)
        saliency = torch.cat(
            pruner.map_inverse_chunks(name, lambda c, inverse: woodfisher_saliency(weights[c], inverse))
        )
        return pruner.plan_by_position(name, saliency)

    def write(self, pruner: Pruner, name: str, plan: TensorPlan, pruned: torch.Tensor) -> torch.Tensor:
        import torch

        from ovit_ray.tensor_math.elimination import woodfisher_update

        weights = pruner.blocks(name)
        return torch.cat(
            pruner.map_inverse_chunks(
                name, lambda c, inverse: woodfisher_update(weights[c], inverse, pruned[c])
            )
        )
