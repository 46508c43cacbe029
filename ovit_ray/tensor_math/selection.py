"""Turning per-weight costs into masks that hit a sparsity exactly.

Costs come per tensor in any layout; `select_smallest` picks exactly k valid entries of least cost over
all tensors together (one global threshold) with a stable tie-break, so when costs are non-decreasing
along a block's elimination order the picked entries of each block form a prefix of that order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def target_count(sparsity: float, total: int) -> int:
    """Number of weights to prune: round(s * d), the exact target."""
    return int(round(sparsity * total))


def select_smallest(
    costs: Sequence[torch.Tensor], valid: Sequence[torch.Tensor], k: int
) -> list[torch.Tensor]:
    """Bool masks (same shapes as `costs`) marking the k valid entries of least cost across all tensors.

    Invalid entries (padding) are never picked. Entries with cost -inf (already pruned) are picked first.
    Ties are broken by position (stable sort), which keeps per-block selections prefixes of the order.
    """
    flat = torch.cat([c.reshape(-1).double() for c in costs])
    flat_valid = torch.cat([v.reshape(-1) for v in valid])
    available = int(flat_valid.sum())
    if not 0 <= k <= available:
        raise ValueError(f"cannot prune {k} weights out of {available}")
    flat = flat.masked_fill(~flat_valid, float("inf"))
    picked = torch.zeros_like(flat_valid)
    picked[torch.sort(flat, stable=True).indices[:k]] = True
    return [
        part.reshape(c.shape) for part, c in zip(picked.split([c.numel() for c in costs]), costs, strict=True)
    ]


def order_layout_to_positions(
    selected_in_order: torch.Tensor, order: torch.Tensor, block_size: int
) -> torch.Tensor:
    """Map a (n, steps) selection laid out along the elimination order back to (n, B) positions."""
    positions = torch.zeros(order.shape[0], block_size, dtype=torch.bool, device=order.device)
    positions.scatter_(1, order, selected_in_order)
    return positions


def nm_prune_mask(scores: torch.Tensor, n_keep: int, group_size: int) -> torch.Tensor:
    """N:M mask for a flat (..., numel) score tensor: in each group of `group_size` consecutive weights prune
    all but the `n_keep` of highest score (magnitude, saliency). Returns True where pruned."""
    groups = scores.reshape(-1, group_size)
    keep_idx = groups.topk(n_keep, dim=1).indices
    pruned = torch.ones_like(groups, dtype=torch.bool)
    pruned.scatter_(1, keep_idx, False)
    return pruned.reshape(scores.shape)


def is_nm_valid(pruned: torch.Tensor, n_keep: int, group_size: int) -> bool:
    """True when every group of `group_size` consecutive weights keeps at most `n_keep` of them."""
    kept = (~pruned).reshape(-1, group_size).sum(dim=1)
    return bool((kept <= n_keep).all())
