"""Heads and MLP neurons of a timm `VisionTransformer` as prunable units: per-layer keep masks, masking them
on the dense model (what scoring and the equality tests run), and the constant branch a unit-less layer keeps.

Masking zeroes a head's slice of the `attn.proj` input and a neuron's `mlp.fc2` input. For a head that is the
same as dropping its attention output; for a neuron it equals zeroing its pre-activation (GELU(0) = 0) as
long as `mlp.norm` is Identity, which `check_vit` demands.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

__all__ = [
    "ConstantBranch",
    "UnitMasks",
    "attention_of",
    "block_widths",
    "check_vit",
    "masked",
    "mlp_of",
    "replica_masks",
    "vit_family",
]


class ConstantBranch(nn.Module):
    """A sublayer left with no heads (or no neurons): it adds only its output bias (`proj` / `fc2`), or
    nothing when that layer has no bias. It takes the attention's keyword arguments so `Block` can call it."""

    def __init__(self, bias: torch.Tensor | None, width: int) -> None:
        super().__init__()
        self.width = width
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        shape = (*x.shape[:-1], self.width)
        zeros = x.new_zeros(shape)  # a fresh tensor: an expanded view of the bias trips autograd's hooks
        return zeros + self.bias if self.bias is not None else zeros


def attention_of(block: nn.Module) -> Attention | None:
    """The block's timm Attention, or None where shrinking left it a `ConstantBranch`."""
    attn = block.attn
    if isinstance(attn, ConstantBranch):
        return None
    if not isinstance(attn, Attention) or not isinstance(attn.norm, nn.Identity) or attn.gate is not None:
        raise ValueError(
            f"attention {type(attn).__name__} is not a plain timm Attention (no scale_norm, no gate)"
        )
    return attn


def mlp_of(block: nn.Module) -> tuple[Mlp, nn.Linear, nn.Linear] | None:
    """The block's timm Mlp with its `fc1` and `fc2`, or None where shrinking left it a `ConstantBranch`."""
    mlp = block.mlp
    if isinstance(mlp, ConstantBranch):
        return None
    if not isinstance(mlp, Mlp) or not isinstance(mlp.norm, nn.Identity):
        raise ValueError(f"MLP {type(mlp).__name__} is not a plain timm Mlp without a hidden-width norm")
    if not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.fc2, nn.Linear):
        raise ValueError("an MLP of 1x1 convolutions is not supported")
    return mlp, mlp.fc1, mlp.fc2


def vit_family(model: nn.Module) -> VisionTransformer:
    """The model as a timm `VisionTransformer`, or the one-line error structured and depth pruning give for
    another family (Swin, EVA, ...), naming it: their block edits know only this class's modules."""
    if not isinstance(model, VisionTransformer):
        family = type(model).__module__.rsplit(".", 1)[-1]
        raise ValueError(
            "structured and depth pruning support timm VisionTransformer models only (ViT, DeiT, DINOv2, "
            f"registers), got {type(model).__name__} of the {family} family; unstructured pruning takes any"
        )
    return model


def check_vit(model: nn.Module) -> VisionTransformer:
    """The model as a `VisionTransformer` whose heads and neurons can be removed exactly, or a ValueError
    naming what stands in the way (another family, a hidden-width norm, a gated attention, a GLU MLP)."""
    vit = vit_family(model)
    for index, block in enumerate(vit.blocks):
        try:
            attention_of(block), mlp_of(block)
        except ValueError as error:
            raise ValueError(f"block {index}: {error}") from None
    return vit


def block_widths(model: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Heads and MLP neurons per block, 0 for a block whose branch is a `ConstantBranch`."""
    blocks = list(check_vit(model).blocks)
    attns, mlps = [attention_of(b) for b in blocks], [mlp_of(b) for b in blocks]
    return (
        tuple(a.num_heads if a is not None else 0 for a in attns),
        tuple(m[1].out_features if m is not None else 0 for m in mlps),
    )


@dataclass(frozen=True)
class UnitMasks:
    """Per block, which heads and which neurons stay (True = kept); one bool tensor per block."""

    heads: tuple[torch.Tensor, ...]
    neurons: tuple[torch.Tensor, ...]

    @classmethod
    def dense(cls, model: nn.Module) -> UnitMasks:
        heads, neurons = block_widths(model)
        return cls(
            tuple(torch.ones(h, dtype=torch.bool) for h in heads),
            tuple(torch.ones(n, dtype=torch.bool) for n in neurons),
        )

    @classmethod
    def first(cls, model: nn.Module, heads: Sequence[int], neurons: Sequence[int]) -> UnitMasks:
        """Keep the first `heads[l]` heads and `neurons[l]` neurons of block l (a model of those sizes)."""
        dense = cls.dense(model)
        return cls(
            tuple(torch.arange(len(m)) < k for m, k in zip(dense.heads, heads, strict=True)),
            tuple(torch.arange(len(m)) < k for m, k in zip(dense.neurons, neurons, strict=True)),
        )

    def kept(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(int(m.sum()) for m in self.heads), tuple(int(m.sum()) for m in self.neurons)


def _scale_inputs(module: nn.Module, scales: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Multiply the input of `module` by `scales` (R, width): the batch holds R replicas of equal size, and
    replica r gets row r (R = 1 for a plain masked model)."""

    def hook(_: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        rows = scales.to(dtype=x.dtype, device=x.device)
        grouped = x.reshape(rows.shape[0], -1, *x.shape[1:])
        view = rows.reshape(rows.shape[0], *([1] * (grouped.dim() - 2)), rows.shape[1])
        return ((grouped * view).reshape(x.shape), *args[1:])

    return module.register_forward_pre_hook(hook)


def replica_masks(block: nn.Module, kind: str, keep: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Mask heads (`kind="heads"`, keep: R x H) or neurons (`"neurons"`, R x h) of one block, per replica."""
    attn, mlp = attention_of(block), mlp_of(block)
    if kind == "heads" and attn is not None:
        return _scale_inputs(attn.proj, keep.repeat_interleave(attn.head_dim, dim=1))
    if kind == "neurons" and mlp is not None:
        return _scale_inputs(mlp[2], keep)
    raise ValueError(f"no {kind!r} to mask in this block (kinds: 'heads', 'neurons')")


@contextmanager
def masked(model: nn.Module, masks: UnitMasks) -> Iterator[nn.Module]:
    """The model with the masked-out heads and neurons zeroed, for the duration of the `with` block."""
    vit = check_vit(model)
    handles = []
    try:
        for block, heads, neurons in zip(vit.blocks, masks.heads, masks.neurons, strict=True):
            handles.append(replica_masks(block, "heads", heads[None]))
            handles.append(replica_masks(block, "neurons", neurons[None]))
        yield model
    finally:
        for handle in handles:
            handle.remove()
