"""Physical shrink of a timm `VisionTransformer` to its kept heads and MLP neurons: the speed-up is real
because the GEMMs are smaller, not because weights are zero.

A kept head keeps its rows of `qkv` (in each of the q, k and v blocks) and its columns of `proj`; timm's
Attention reshapes with `num_heads`, `head_dim` and `attn_dim`, so those are set per block and `head_dim`
(hence the softmax scale) is unchanged. A kept neuron keeps its `fc1` row and `fc2` column. A branch with no
unit left becomes a `ConstantBranch` that adds its output bias, which is what the masked model computes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from .units import ConstantBranch, UnitMasks, attention_of, block_widths, check_vit, mlp_of

__all__ = ["rebuild", "shrink", "shrink_block", "shrunk_sizes"]


def _linear(source: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None) -> nn.Linear:
    """A new Linear holding the chosen output rows and input columns of `source` (all when None)."""
    weight = source.weight.detach()
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    bias = source.bias.detach() if source.bias is not None else None
    bias = bias[rows] if bias is not None and rows is not None else bias
    out = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None and out.bias is not None:
            out.bias.copy_(bias)
    return out


def _shrink_attention(block: nn.Module, keep: torch.Tensor) -> None:
    attn = attention_of(block)
    kept = torch.nonzero(keep.cpu()).flatten()
    if attn is None or len(kept) == 0:
        block.attn = (
            ConstantBranch(attn.proj.bias, attn.proj.out_features) if attn is not None else block.attn
        )
        return
    dh, width = attn.head_dim, attn.attn_dim
    cols = (kept[:, None] * dh + torch.arange(dh)).flatten()  # this head's channels in q, k, v and proj
    rows = torch.cat([part * width + cols for part in range(3)])
    attn.qkv = _linear(attn.qkv, rows, None)
    attn.proj = _linear(attn.proj, None, cols)
    attn.num_heads = len(kept)
    attn.attn_dim = len(kept) * dh


def _shrink_mlp(block: nn.Module, keep: torch.Tensor) -> None:
    parts = mlp_of(block)
    kept = torch.nonzero(keep.cpu()).flatten()
    if parts is None:
        return
    mlp, fc1, fc2 = parts
    if len(kept) == 0:
        block.mlp = ConstantBranch(fc2.bias, fc2.out_features)
        return
    mlp.fc1 = _linear(fc1, kept, None)
    mlp.fc2 = _linear(fc2, None, kept)


def shrink(model: nn.Module, masks: UnitMasks) -> nn.Module:
    """A shrunk copy of the model that keeps the heads and neurons `masks` marks True (the input is left
    as it is). Its logits equal those of the model under `units.masked(model, masks)`."""
    vit = check_vit(model)
    heads, neurons = block_widths(vit)
    if tuple(map(len, masks.heads)) != heads or tuple(map(len, masks.neurons)) != neurons:
        raise ValueError(f"masks for {heads} heads / {neurons} neurons per block do not fit this model")
    out = copy.deepcopy(vit)
    for block, keep_heads, keep_neurons in zip(out.blocks, masks.heads, masks.neurons, strict=True):
        shrink_block(block, keep_heads, keep_neurons)
    return out


def shrink_block(block: nn.Module, keep_heads: torch.Tensor, keep_neurons: torch.Tensor) -> None:
    """Shrink one block in place to the heads and neurons marked True (what latency tables time)."""
    _shrink_attention(block, keep_heads)
    _shrink_mlp(block, keep_neurons)


def shrunk_sizes(model: nn.Module) -> dict[str, list[int]]:
    """Per-block head and neuron counts, what a saved shrunk model records next to its weights (JSON-ready)."""
    heads, neurons = block_widths(model)
    return {"heads": list(heads), "neurons": list(neurons)}


def rebuild(model: nn.Module, sizes: dict[str, Sequence[int]]) -> nn.Module:
    """A freshly built dense model shrunk to recorded `sizes`, ready for the shrunk model's `state_dict`."""
    blocks = len(block_widths(model)[0])
    heads, neurons = sizes["heads"], sizes["neurons"]
    if len(heads) != blocks or len(neurons) != blocks:  # zip(strict=True) would say only "shorter"
        raise ValueError(
            f"structure: heads and neurons of {len(heads)} / {len(neurons)} blocks for a model of {blocks}"
        )
    return shrink(model, UnitMasks.first(model, heads, neurons))
