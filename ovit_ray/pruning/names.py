"""The pruner's choices as plain names (no torch), so `ovit-ray --help` can list them without importing torch.

Method names come from the registry, `ovit_ray.pruning.methods.method_names()`, also torch-free.
"""

from __future__ import annotations

SCOPES: tuple[str, ...] = ("global", "uniform")
# Structured pruners (`ovit_ray.pruning.structured.scorers`): heads and MLP neurons under a cost budget.
# `structured-magnitude` shares everything with `optin` but the score (the baseline of the OPTIN frontier).
STRUCTURED_METHODS: tuple[str, ...] = ("optin", "structured-magnitude")
DTYPE_NAMES: tuple[str, ...] = ("float64", "float32")
# Every attention and MLP projection of every transformer block. timm fuses q, k and v into one
# `qkv` Linear, so a pattern written for split `q`/`k`/`v` would silently select nothing.
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
