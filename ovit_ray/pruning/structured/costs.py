"""Analytic MACs and parameters of a timm `VisionTransformer` with per-layer kept heads, neurons and tokens.

The convention of the ViT-pruning literature ("FLOPs" = multiply-adds), counted per image: per head
3·N·d·dh (qkv) + 2·N²·dh (QKᵀ and AV) + N·dh·d (proj); per neuron 2·N·d; plus the patch-embedding conv and
the classifier. LayerNorm, softmax, GELU and biases are ignored. Unlike OPTIN's script (N = 196, no
classifier), N counts every token a block really processes (prefix tokens too), so the model matches
`torch.utils.flop_counter` on the shrunk model exactly (half its FLOPs); the budget search uses the same.

Token merging (`tokens`): `Widths.tokens` are the tokens a block's attention sees and `Widths.merged` the
merges it makes before its MLP, which then sees `tokens - merged`. A merging block also pays for matching:
|A|·|B| MACs per dimension of its keys (dh; d in a block without heads), A and B the two halves of its
unprotected tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from .tokens import merge_schedule, merged_tokens
from .units import attention_of, block_widths, check_vit, mlp_of

__all__ = ["VitCosts", "Widths"]


@dataclass(frozen=True)
class Widths:
    """Kept heads, MLP neurons, block-input tokens and tokens merged before the MLP (none when empty), one
    entry per block."""

    heads: tuple[int, ...]
    neurons: tuple[int, ...]
    tokens: tuple[int, ...]
    merged: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.heads) == len(self.neurons) == len(self.tokens) == len(self.merged or self.heads):
            raise ValueError("heads, neurons, tokens and merges need one entry per block each")


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class VitCosts:
    """What the cost of a ViT depends on, read once from a model (dense or shrunk) by `of`."""

    embed_dim: int
    head_dim: int
    widths: Widths  # the model's own
    fixed_macs: int  # patch embedding and classifier
    fixed_params: int  # everything outside the blocks' attention and MLP branches
    head_params: int  # per head: its qkv rows (and biases) and proj columns
    neuron_params: int  # per neuron: its fc1 row (and bias) and fc2 column
    attn_params: tuple[int, ...]  # per block, attention parameters besides the heads' (proj bias, q/k norms)
    mlp_params: tuple[int, ...]  # per block, the fc2 bias
    attn_bias: tuple[int, ...]  # per block, what a zero-head branch keeps (the proj bias)
    prefix_tokens: int  # cls, dist and register tokens: never merged

    @classmethod
    def of(cls, model: nn.Module) -> VitCosts:
        vit = check_vit(model)
        d = int(vit.embed_dim)
        heads, neurons = block_widths(vit)
        blocks = list(vit.blocks)
        attns, mlps = [attention_of(b) for b in blocks], [mlp_of(b) for b in blocks]
        some_attn = next((a for a in attns if a is not None), None)
        some_mlp = next((m for m in mlps if m is not None), None)
        dh = some_attn.head_dim if some_attn is not None else 0
        qkv_bias = some_attn is not None and some_attn.qkv.bias is not None
        head_params = 4 * d * dh + (3 * dh if qkv_bias else 0)
        neuron_params = 2 * d + (1 if some_mlp is not None and some_mlp[1].bias is not None else 0)
        attn_total = [_numel(b.get_submodule("attn")) for b in blocks]
        mlp_total = [_numel(b.get_submodule("mlp")) for b in blocks]
        attn_params = tuple(t - h * head_params for t, h in zip(attn_total, heads, strict=True))
        mlp_params = tuple(t - n * neuron_params for t, n in zip(mlp_total, neurons, strict=True))
        attn_bias = tuple(
            _numel_bias(a.proj) if a is not None else t for a, t in zip(attns, attn_total, strict=True)
        )
        branches = sum(attn_total) + sum(mlp_total)
        grid = vit.patch_embed.grid_size
        conv = vit.patch_embed.proj
        patch_macs = int(grid[0] * grid[1]) * conv.weight.numel() if isinstance(conv, nn.Conv2d) else 0
        head = vit.head
        classifier_macs = head.weight.numel() if isinstance(head, nn.Linear) else 0
        prefix = int(vit.num_prefix_tokens)
        counts, merged = merged_tokens(int(grid[0] * grid[1]) + prefix, prefix, merge_schedule(vit))
        return cls(
            embed_dim=d,
            head_dim=dh,
            widths=Widths(heads, neurons, counts, merged if any(merged) else ()),
            fixed_macs=patch_macs + classifier_macs,
            fixed_params=_numel(vit) - branches,
            head_params=head_params,
            neuron_params=neuron_params,
            attn_params=attn_params,
            mlp_params=mlp_params,
            attn_bias=attn_bias,
            prefix_tokens=prefix,
        )

    def head_macs(self, tokens: int) -> int:
        """MACs of one head in a block that processes `tokens` tokens."""
        d, dh = self.embed_dim, self.head_dim
        return 4 * tokens * d * dh + 2 * tokens * tokens * dh

    def neuron_macs(self, tokens: int) -> int:
        return 2 * tokens * self.embed_dim

    def merge_macs(self, tokens: int, merged: int, heads: int) -> int:
        """MACs of matching the tokens of a block that merges `merged` of its `tokens` (none when 0)."""
        unprotected = tokens - self.prefix_tokens
        width = self.head_dim if heads else self.embed_dim
        return (unprotected + 1) // 2 * (unprotected // 2) * width if merged else 0

    def block_macs(self, heads: int, neurons: int, tokens: int, merged: int = 0) -> int:
        """MACs of one block with these kept units that takes `tokens` tokens and merges `merged` of them."""
        return (
            heads * self.head_macs(tokens)
            + neurons * self.neuron_macs(tokens - merged)
            + self.merge_macs(tokens, merged, heads)
        )

    def macs(self, widths: Widths | None = None) -> int:
        """MACs of one image through the model at `widths` (its own widths when None)."""
        w = widths or self.widths
        merged = w.merged or (0,) * len(w.heads)
        blocks = sum(
            self.block_macs(h, m, n, r)
            for h, m, n, r in zip(w.heads, w.neurons, w.tokens, merged, strict=True)
        )
        return self.fixed_macs + blocks

    def params(self, widths: Widths | None = None) -> int:
        """Parameters of the model shrunk to `widths` (only heads and neurons matter): a zero-head branch
        keeps its proj bias only, a zero-neuron branch its fc2 bias."""
        w = widths or self.widths
        total = self.fixed_params
        for layer, (h, m) in enumerate(zip(w.heads, w.neurons, strict=True)):
            total += h * self.head_params + self.attn_params[layer] if h else self.attn_bias[layer]
            total += m * self.neuron_params + self.mlp_params[layer]
        return total

    def with_widths(
        self, heads: Sequence[int], neurons: Sequence[int], tokens: Sequence[int] | None = None
    ) -> Widths:
        """`Widths` for these kept heads and neurons, at the given tokens per block (none merged), or at the
        model's own token counts and merges."""
        if tokens is not None:
            return Widths(tuple(heads), tuple(neurons), tuple(tokens))
        return Widths(tuple(heads), tuple(neurons), self.widths.tokens, self.widths.merged)

    def merged_widths(self, heads: Sequence[int], neurons: Sequence[int], r: Sequence[int]) -> Widths:
        """`Widths` for these kept units when the model merges tokens with schedule `r` (capped as
        `merging` caps it) from the tokens its first block takes."""
        counts, merged = merged_tokens(self.widths.tokens[0], self.prefix_tokens, r)
        return Widths(tuple(heads), tuple(neurons), counts, merged)


def _numel_bias(linear: nn.Linear) -> int:
    return linear.bias.numel() if linear.bias is not None else 0
