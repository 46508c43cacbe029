"""Pruning knobs, checked once so the math below can trust them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ovit_ray.pruning.methods import get_method
from ovit_ray.pruning.names import DTYPE_NAMES, SCOPES, parse_pattern

if TYPE_CHECKING:
    import torch

__all__ = ["SCOPES", "PruneSettings", "dtype_of", "parse_pattern"]


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype named `name` (one of `DTYPE_NAMES`). torch is imported here, not at module
    level: checking settings (a sweep's `--dry-run`) must not import it."""
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


@dataclass(frozen=True)
class PruneSettings:
    """One pruning configuration.

    damp is the absolute dampening lambda added to the Fisher of gradients of the *mean* loss over
    batches of `grad_batch_size`; it scales with gradient magnitude, so keep the three together.
    pattern (N, M) makes masks N:M semi-structured; the sparsity is then (M - N) / M.
    dtype is the elimination's precision, fisher_dtype that of the Fisher sums and their inverse: float32
    elimination on a float64 inverse gave >= 99.998% the float64 masks (lambda 1e-8..1e-6, B 64/192, real
    gradients; BENCHMARKS.md, issue 14), all-float32 as little as 98.6%; float32 sums halve memory for large models.
    """

    method: str = "ovit"  # a name in `ovit_ray.pruning.methods` (method_names())
    block_size: int = 64
    num_grads: int = 128
    damp: float = 1e-7
    grad_batch_size: int = 16
    pattern: tuple[int, int] | None = None
    scope: str = "global"
    dtype: str = "float32"
    fisher_dtype: str = "float64"
    chunk_bytes: int | None = (
        None  # inverse-Fisher bytes per elimination chunk; None: sized from B and the cache
    )

    def __post_init__(self) -> None:
        try:
            get_method(self.method)
        except ValueError as err:
            raise ValueError(f"method: {err}") from None
        for name in ("block_size", "num_grads", "grad_batch_size", "chunk_bytes"):
            value = getattr(self, name)
            if name == "chunk_bytes" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not 0 < self.damp < math.inf:
            raise ValueError(f"damp: must be a finite number > 0, got {self.damp!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope: must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        for name in ("dtype", "fisher_dtype"):
            if getattr(self, name) not in DTYPE_NAMES:
                raise ValueError(
                    f"{name}: must be one of {', '.join(DTYPE_NAMES)}, got {getattr(self, name)!r}"
                )
        if self.pattern is not None:
            keep, group = self.pattern
            if not 0 < keep < group:
                raise ValueError(f"pattern: need 0 < N < M, got {keep}:{group}")
            if self.block_size % group:
                raise ValueError(
                    f"block_size: must be a multiple of M={group} for an N:M pattern, got {self.block_size}"
                )

    @property
    def uses_fisher(self) -> bool:
        return get_method(self.method).needs_fisher

    @property
    def pattern_sparsity(self) -> float | None:
        return None if self.pattern is None else 1 - self.pattern[0] / self.pattern[1]

    @property
    def torch_dtype(self) -> torch.dtype:
        return dtype_of(self.dtype)
