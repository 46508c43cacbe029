"""Analytic MACs and parameters of a depth-pruned ViT, and of depth plans on it before they are applied.

Built on `structured.VitCosts` (same convention: multiply-adds per image, LayerNorm, softmax, activations and
biases ignored, so the count matches half of `torch.utils.flop_counter`'s FLOPs): a dropped attention is a
zero-head branch (it costs nothing; its parameters are the kept `proj.bias`, if any), a merged MLP costs
N·d·d MACs (N: the tokens that reach the MLP, after any ToMe merges) and d·d + d parameters, and a linearised MLP kept as two thin GEMMs (h < d/2) costs what it did.
Linearising also folds `norm2`'s affine away (its 2·d parameters).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from torch import nn

from ovit_ray.pruning.structured.costs import VitCosts

from .structure import depth_structure, merged_as_constant, vit_blocks

__all__ = ["DepthCosts"]


def _affine_params(norm: nn.Module) -> int:
    return sum(p.numel() for p in norm.parameters())


@dataclass(frozen=True)
class DepthCosts:
    """What the cost of a depth-pruned ViT depends on, read once from a model by `of`."""

    base: VitCosts  # of the model with each merged MLP seen as its bias-only branch
    merged: tuple[bool, ...]  # per block, whether the MLP is one d x d Linear
    norm2_params: tuple[int, ...]  # per block, norm2's affine parameters (0 once folded)

    @classmethod
    def of(cls, model: nn.Module) -> DepthCosts:
        merged = tuple(state == "merged" for state in depth_structure(model)["mlp"])
        with merged_as_constant(model):
            base = VitCosts.of(model)
        return cls(base, merged, tuple(_affine_params(b.get_submodule("norm2")) for b in vit_blocks(model)))

    def merges(self, block: int) -> bool:
        """Whether linearising this block's MLP merges it (h >= d/2) rather than keeping two thin GEMMs."""
        neurons = self.base.widths.neurons[block]
        if neurons == 0 and not self.merged[block]:
            raise ValueError(f"block {block} has no MLP neuron left, so no activation to linearise")
        return self.merged[block] or 2 * neurons >= self.base.embed_dim

    def _plan(
        self, drop_attention: Collection[int], linearise: Collection[int]
    ) -> tuple[list[int], list[int]]:
        """Heads and neurons per block after the plan, with merged MLPs at zero neurons."""
        widths = self.base.widths
        heads = [0 if b in drop_attention else h for b, h in enumerate(widths.heads)]
        neurons = [0 if b in linearise and self.merges(b) else n for b, n in enumerate(widths.neurons)]
        return heads, neurons

    def macs(self, drop_attention: Collection[int] = (), linearise: Collection[int] = ()) -> int:
        """MACs of one image after dropping the attention of `drop_attention` and linearising the MLPs of
        `linearise` (block indices; already applied edits count as they are)."""
        heads, neurons = self._plan(drop_attention, linearise)
        d, w = self.base.embed_dim, self.base.widths
        tokens = [
            n - r for n, r in zip(w.tokens, w.merged or (0,) * len(w.tokens), strict=True)
        ]  # at the MLP
        merged = sum(
            tokens[b] * d * d
            for b in range(len(heads))
            if self.merged[b] or b in linearise and self.merges(b)
        )
        return self.base.macs(self.base.with_widths(heads, neurons)) + merged

    def params(
        self, drop_attention: Collection[int] = (), linearise: Collection[int] = (), keep_bias: bool = True
    ) -> int:
        """Parameters after the plan; dropped attentions keep their `proj.bias` when `keep_bias`."""
        heads, neurons = self._plan(drop_attention, linearise)
        base, d = self.base, self.base.embed_dim
        total = base.params(base.with_widths(heads, neurons))
        for b in range(len(heads)):
            if b in drop_attention and not keep_bias:
                total -= base.attn_bias[b]
            if self.merged[b] or b in linearise and self.merges(b):
                total += d * d + d - base.mlp_params[b]  # the merged Linear instead of fc2's bias
            if b in linearise and not self.merged[b]:
                total -= self.norm2_params[b]
                if not self.merges(b):  # the thin fc1 always gets a bias (it carries norm2's beta)
                    total += neurons[b] * (2 * d + 1 - base.neuron_params)
        return total

    def speedup(self, drop_attention: Collection[int] = (), linearise: Collection[int] = ()) -> float:
        """Analytic speed-up of the plan: this model's MACs over the planned model's."""
        return self.macs() / self.macs(drop_attention, linearise)
