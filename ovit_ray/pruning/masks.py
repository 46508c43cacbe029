"""Binary masks over prunable weights, enforced after every optimizer step."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


class MaskSet:
    """Name -> bool tensor (True = weight kept). Applying it zeroes pruned weights in place.

    Masks are plain tensors keyed by parameter name, so they travel in checkpoints next to the
    model's state dict and can be broadcast between Ray workers like any other tensor.
    """

    def __init__(self, masks: Mapping[str, torch.Tensor]):
        self._masks = {name: mask.to(torch.bool) for name, mask in masks.items()}

    @classmethod
    def dense(cls, params: Mapping[str, nn.Parameter]) -> MaskSet:
        """All weights kept, except those that are exactly zero already (they stay pruned)."""
        return cls({name: p.detach() != 0 for name, p in params.items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def items(self) -> ItemsView[str, torch.Tensor]:
        return self._masks.items()

    def to(self, device: torch.device | str) -> MaskSet:
        return MaskSet({name: mask.to(device) for name, mask in self._masks.items()})

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every pruned weight of `model` in place."""
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            params[name].mul_(mask.to(params[name].device))

    def attach(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> RemovableHandle:
        """Re-apply the masks after every `optimizer.step()`; returns the hook handle (call .remove())."""
        return optimizer.register_step_post_hook(lambda *_: self.apply(model))

    def counts(self) -> tuple[int, int]:
        """(pruned, total) over all masked tensors."""
        total = sum(m.numel() for m in self._masks.values())
        kept = sum(int(m.sum()) for m in self._masks.values())
        return total - kept, total

    def sparsity(self) -> float:
        pruned, total = self.counts()
        return pruned / total if total else 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: mask.cpu() for name, mask in self._masks.items()}

    def equals(self, other: MaskSet) -> bool:
        return self._masks.keys() == other._masks.keys() and all(
            torch.equal(mask.cpu(), other[name].cpu()) for name, mask in self._masks.items()
        )
