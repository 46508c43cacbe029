"""Global magnitude pruning: cost |w|, one threshold, no Fisher, survivors unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ovit_ray.pruning.methods._registry import register_method
from ovit_ray.pruning.methods.base import PruningMethod, TensorPlan

if TYPE_CHECKING:
    from ovit_ray.pruning.pruner import Pruner


@register_method
class Magnitude(PruningMethod):
    """The baseline every second-order method must beat."""

    name = "magnitude"
    needs_fisher = False

    def plan(self, pruner: Pruner, name: str) -> TensorPlan:
        return pruner.plan_by_position(name, pruner.blocks(name).abs())
