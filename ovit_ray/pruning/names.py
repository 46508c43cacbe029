"""The pruner's choices as plain names (no torch), so `ovit-ray --help` can list them without importing torch.

Method names come from the registry, `ovit_ray.pruning.methods.method_names()`, also torch-free.
"""

from __future__ import annotations

SCOPES: tuple[str, ...] = ("global", "uniform")
# Structured pruners (`ovit_ray.pruning.structured.scorers`): heads and MLP neurons under a cost budget. The
# baselines share everything with `optin` but the score: global group magnitude (L1, L2), first-order Taylor
# on labelled calibration images, and random (the floor); docs/STRUCTURED.md.
STRUCTURED_METHODS: tuple[str, ...] = ("optin", "group-l1", "group-l2", "taylor", "random")
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32")
# Every attention and MLP projection of a timm `VisionTransformer`'s blocks (timm fuses q, k and v into one
# `qkv` Linear). Other families name them otherwise: without patterns, `params.select_prunable` finds them in
# the model itself (`params.block_linears`), which for a VisionTransformer selects exactly these.
DEFAULT_PATTERNS: tuple[str, ...] = (
    r"blocks\.\d+\.attn\.qkv\.weight",
    r"blocks\.\d+\.attn\.proj\.weight",
    r"blocks\.\d+\.mlp\.fc1\.weight",
    r"blocks\.\d+\.mlp\.fc2\.weight",
)


def parse_pattern(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep at most N of every M consecutive weights (NVIDIA's N:M convention)."""
    try:
        keep, group = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"pattern: expected N:M such as 2:4, got {text!r}") from None
    if not 0 < keep < group:
        raise ValueError(f"pattern: need 0 < N < M, got {text!r}")
    return keep, group
