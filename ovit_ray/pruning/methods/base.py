"""What a pruning method is: whether it needs a Fisher, how it ranks weights, how it writes the survivors.

Torch appears only in annotations here, so the registry can list method names for `ovit-ray --help`
without importing torch; method modules import torch inside their functions for the same reason.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from ovit_ray.pruning.pruner import Pruner

__all__ = ["PruningMethod", "TensorPlan"]


@dataclass
class TensorPlan:
    """One tensor's ranking, computed once and shared by every sparsity; lower cost = pruned earlier.

    With `order` (methods that eliminate sequentially), costs and valid follow each block's elimination order;
    without it they are laid out by position. Already-pruned weights cost -inf (masks never regrow).
    """

    costs: torch.Tensor  # (n, steps) along the elimination order, else (n, B) by position
    valid: torch.Tensor  # same layout as costs; False on padding
    order: torch.Tensor | None  # (n, steps) positions in elimination order
    fixed_pruned: torch.Tensor | None  # (n, B) pruned set of an N:M pattern, independent of sparsity
    downdates: torch.Tensor | None = (
        None  # (n, steps, B) elimination downdates u_t (oViT, within the cache cap)
    )
    coeffs: torch.Tensor | None = None  # (n, steps) their coefficients: w_k = w_0 - sum_{t<k} coeffs_t u_t


class PruningMethod(ABC):
    """A pruning method: subclass, set `name` (and `needs_fisher`), implement `plan`, decorate with
    `register_method`. The Pruner owns the shared work (Fisher, blocks, thresholds, masks); a method only
    says how weights are ranked and, by overriding `write`, how the survivors change."""

    name: ClassVar[str]
    needs_fisher: ClassVar[bool] = True  # False: the Pruner skips collecting gradients

    @abstractmethod
    def plan(self, pruner: Pruner, name: str) -> TensorPlan:
        """Rank every weight of tensor `name` (see `Pruner.plan_by_position` for per-weight scores)."""

    def write(self, pruner: Pruner, name: str, plan: TensorPlan, pruned: torch.Tensor) -> torch.Tensor:
        """The tensor's weights in blocks (n, B) after pruning the positions `pruned`; by default the
        survivors keep their values."""
        return pruner.blocks(name).masked_fill(pruned, 0)
