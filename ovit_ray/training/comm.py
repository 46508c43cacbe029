"""Collectives of a data-parallel run that degrade to no-ops in a single process."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist


class Comm:
    """Collectives that degrade to no-ops in a single process; NCCL needs tensors on the GPU."""

    def __init__(self, rank: int, size: int, device: torch.device):
        self.rank, self.size = rank, size
        self.device = (
            device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")
        )

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor_(self, t: torch.Tensor) -> None:
        if self.size > 1:
            dist.all_reduce(t)

    def broadcast_(self, t: torch.Tensor) -> None:
        if self.size > 1:
            moved = t.to(self.device)
            dist.broadcast(moved, src=0)
            t.copy_(moved)

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


def digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Short content hash of named tensors: workers compare theirs to prove identical state."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
