"""What a depth-pruned ViT's blocks became, recorded next to its weights, and the model rebuilt from it.

Mirrors `structured.shrunk_sizes` / `structured.rebuild`: a saved model records `depth_structure(model)`
(JSON-ready: its per-block heads and neurons as `shrunk_sizes` gives them, a merged MLP counting 0 neurons,
and each block's attention and MLP state) beside its `state_dict`; `rebuild_depth(dense, structure)` builds
the same modules from a freshly created dense model, after which `load_state_dict` fits key by key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

from ovit_ray.pruning.structured.shrink import rebuild, shrunk_sizes
from ovit_ray.pruning.structured.units import ConstantBranch, attention_of, vit_family

from .edits import AnnealedActivation, affine_free_norm2, anneal_activation, drop_attention, merge_mlp

__all__ = [
    "ATTENTION_STATES",
    "MLP_STATES",
    "depth_structure",
    "merged_as_constant",
    "rebuild_depth",
    "vit_blocks",
]

ATTENTION_STATES = ("kept", "bias", "none")  # dropped keeping ls1(proj.bias), dropped entirely
MLP_STATES = ("act", "annealed", "identity", "merged", "absent")  # absent: a shrunk MLP with no neuron left


def vit_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a timm `VisionTransformer`, or a ValueError for any other model."""
    return list(vit_family(model).blocks)


@contextmanager
def merged_as_constant(model: nn.Module) -> Iterator[nn.Module]:
    """The model with each merged MLP briefly swapped for a bias-only branch, which the width-pruning
    helpers (`check_vit`, `VitCosts`, `shrunk_sizes`) can read: no neurons, d parameters."""
    merged = [(b, m) for b in vit_blocks(model) if isinstance(m := b.get_submodule("mlp"), nn.Linear)]
    try:
        for block, linear in merged:
            block.mlp = ConstantBranch(linear.bias, linear.out_features)
        yield model
    finally:
        for block, linear in merged:
            block.mlp = linear


def _attention_state(block: nn.Module) -> str:
    if attention_of(block) is not None:
        return "kept"
    attn = block.get_submodule("attn")
    return "bias" if isinstance(attn, ConstantBranch) and attn.bias is not None else "none"


def _mlp_state(block: nn.Module) -> str:
    mlp = block.mlp
    if isinstance(mlp, nn.Linear):
        return "merged"
    if isinstance(mlp, ConstantBranch):
        return "absent"
    act = getattr(mlp, "act", None)
    if isinstance(act, AnnealedActivation):
        return "annealed"
    return "identity" if isinstance(act, nn.Identity) else "act"


def depth_structure(model: nn.Module) -> dict[str, list]:
    """Per block: `heads`, `neurons` (0 where merged), the attention's state (`ATTENTION_STATES`) and the
    MLP's (`MLP_STATES`)."""
    blocks = vit_blocks(model)
    with merged_as_constant(model):
        sizes = shrunk_sizes(model)
    return {
        **sizes,
        "attention": [_attention_state(b) for b in blocks],
        "mlp": [_mlp_state(b) for b in blocks],
    }


def _merged_linear(block: nn.Module, like: nn.Module) -> None:
    """An empty d x d merged MLP (the state_dict fills it) behind an affine-free `norm2`."""
    param = next(like.parameters())
    norm = block.get_submodule("norm2")
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"norm2 {type(norm).__name__} is not a LayerNorm")
    width = norm.normalized_shape[0]
    block.mlp = nn.Linear(width, width, device=param.device, dtype=param.dtype)
    affine_free_norm2(block)


def rebuild_depth(model: nn.Module, structure: dict[str, Sequence]) -> nn.Module:
    """The dense `model` (left as it is) shrunk to the recorded widths and given the recorded depth edits,
    ready for the depth-pruned model's `state_dict` (which also restores each annealed activation's mix)."""
    out = rebuild(model, structure) if "heads" in structure else copy.deepcopy(model)
    blocks = vit_blocks(out)
    attention, mlps = list(structure["attention"]), list(structure["mlp"])
    if len(attention) != len(blocks) or len(mlps) != len(blocks):
        raise ValueError(f"a structure of {len(attention)} / {len(mlps)} blocks for a model of {len(blocks)}")
    for index, (block, attn, mlp) in enumerate(zip(blocks, attention, mlps, strict=True)):
        if attn not in ATTENTION_STATES or mlp not in MLP_STATES:
            raise ValueError(f"block {index}: unknown states {attn!r} / {mlp!r}")
        if attn != "kept":
            drop_attention(block, keep_bias=attn == "bias")
        if mlp == "merged":
            _merged_linear(block, out)
        elif mlp in ("annealed", "identity"):
            anneal_activation(block, 0.0 if mlp == "identity" else 1.0)
        if mlp == "identity":
            merge_mlp(block)
        if _attention_state(block) != attn or _mlp_state(block) != mlp:
            raise ValueError(f"block {index} cannot become {attn!r} / {mlp!r} (its widths differ)")
    return out
