"""Cutting flat weight tensors into Fisher blocks of size B.

A tensor of `numel` weights is flattened row-major and cut into consecutive blocks of B. When B does
not divide `numel` the tail is padded with zeros: padded slots have zero weight and zero gradient, so
their Fisher rows are `lambda * e_i`; they are decoupled from real weights, cost nothing to eliminate
and are never counted as pruned weights (see `valid_mask`).
"""

from __future__ import annotations

import math

import torch


def num_blocks(numel: int, block_size: int) -> int:
    """Blocks needed to hold `numel` weights (the last one may be padded)."""
    return math.ceil(numel / block_size)


def to_blocks(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """(..., numel) -> (..., n_blocks, B), zero-padding the tail (copies only when padding)."""
    numel = flat.shape[-1]
    pad = num_blocks(numel, block_size) * block_size - numel
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    return flat.reshape(*flat.shape[:-1], -1, block_size)


def from_blocks(blocks: torch.Tensor, numel: int) -> torch.Tensor:
    """(..., n_blocks, B) -> (..., numel), dropping the padding."""
    return blocks.reshape(*blocks.shape[:-2], -1)[..., :numel]


def valid_mask(numel: int, block_size: int, device: torch.device | None = None) -> torch.Tensor:
    """(n_blocks, B) bool, False on padded slots."""
    n = num_blocks(numel, block_size)
    return (torch.arange(n * block_size, device=device) < numel).reshape(n, block_size)
