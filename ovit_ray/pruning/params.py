"""Which weights are prunable: by default the attention and MLP Linears of every transformer block, found in
the model itself (any timm family), or the parameters whose names match the user's regular expressions."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

# timm's attention classes (Attention, WindowAttention, EvaAttention, TalkingHeadAttn, ...) and MLP classes
# (Mlp, GluMlp, SwiGLU, GatedMlp, MlpWithDepthwiseConv, ...), or the attribute names blocks give them.
_ATTENTION_CLASS = re.compile(r"Attention|Attn", re.IGNORECASE)
_MLP_CLASS = re.compile(r"Mlp|GLU|FeedForward|Ffn", re.IGNORECASE)
_ATTENTION_NAMES = frozenset({"attn", "attention", "self_attn"})
_MLP_NAMES = frozenset({"mlp", "ffn", "feed_forward"})


def _sublayers(block: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the block's attention-like and MLP-like children."""
    attention, mlp = [], []
    for name, child in block.named_children():
        kind = type(child).__name__
        if name in _ATTENTION_NAMES or _ATTENTION_CLASS.search(kind):
            attention.append(name)
        elif name in _MLP_NAMES or _MLP_CLASS.search(kind):
            mlp.append(name)
    return attention, mlp


def block_linears(model: nn.Module) -> list[str]:
    """Weight names of the Linears directly inside the attention and the MLP of every transformer block.

    A block is any module with an attention child and an MLP child, so the rule holds across timm families
    whatever their paths: `blocks.N` (ViT, DeiT, DINOv2, EVA), `layers.N.blocks.M` (Swin),
    `stages.N.blocks.M`; fused `qkv` or split `q_proj`/`k_proj`/`v_proj`, `proj`, `fc1`/`fc2` or gated
    `fc1_g`/`fc1_x`, `w0`-`w2`.
    Only direct children count: Swin-V2's position-bias MLP inside the attention, patch merging, attention
    pooling heads and classifiers are left dense.
    """
    found: set[str] = set()
    for path, block in model.named_modules():
        attention, mlp = _sublayers(block)
        if not attention or not mlp:
            continue
        for sub in (*attention, *mlp):
            for name, child in getattr(block, sub).named_children():
                if isinstance(child, nn.Linear):
                    found.add(".".join(p for p in (path, sub, name, "weight") if p))
    return [name for name, _ in model.named_parameters() if name in found]


def select_prunable(model: nn.Module, patterns: Sequence[str] | None = None) -> dict[str, nn.Parameter]:
    """Parameters whose full name matches one of `patterns` (re.fullmatch), in model order; without
    patterns (None), the attention and MLP weights of every transformer block (`block_linears`).

    A pattern that matches nothing is an error rather than a silent no-op, because it usually means the
    pattern was written for another naming scheme.
    """
    named = dict(model.named_parameters())
    if patterns is None:
        chosen = block_linears(model)
        if not chosen:
            raise ValueError(
                f"params: {type(model).__name__} has no transformer block with attention and MLP Linears; "
                f"name the weights to prune (example names: {', '.join(list(named)[:4])}, ...)"
            )
        return {name: named[name] for name in chosen}
    if not patterns:
        raise ValueError("params: at least one parameter pattern is required")
    selected: dict[str, nn.Parameter] = {}
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"params: invalid regular expression {pattern!r}: {err}") from None
        hits = [name for name in named if regex.fullmatch(name)]
        if not hits:
            raise ValueError(
                f"params: pattern {pattern!r} matches no parameter of the model "
                f"(example names: {', '.join(list(named)[:4])}, ...)"
            )
        selected.update((name, named[name]) for name in hits)
    return {name: named[name] for name in named if name in selected}
