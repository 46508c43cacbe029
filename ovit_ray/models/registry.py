"""Model registry: ovit-ray presets plus every timm architecture, never with pretrained weights.

Presets are plain timm `VisionTransformer`s so their module names (`blocks.N.attn.qkv`,
`attn.proj`, `mlp.fc1`, `mlp.fc2`) are exactly the ones the pruner selects for real timm ViTs.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .checkpoint import load_checkpoint

if TYPE_CHECKING:  # timm and torch are imported where models are built: preset names come without them
    from torch import nn


class UnknownModelError(ValueError):
    """Raised for a model name that is neither a preset nor a timm architecture."""


@dataclass(frozen=True)
class PresetSpec:
    """A small ViT architecture paired with the dataset (and resolution) it is trained on."""

    dataset: str
    image_size: int
    num_classes: int
    arch: dict[str, Any] = field(
        default_factory=dict
    )  # VisionTransformer kwargs besides img_size/num_classes


# digits-vit: 16x16 inputs (8x8 digits upsampled 2x), 4x4 patches -> 16 tokens + cls; average pooling
# (instead of the cls token) reaches ~99% on 1,437 training images where cls pooling stalls near 96%.
# Width 64 keeps an epoch under ~1 s on 2 CPU cores and every prunable weight a multiple of 64.
# digits04-vit: the same architecture on digits 0-4 only, the source of the same-domain transfer to 5-9.
_DIGITS_ARCH = dict(patch_size=4, embed_dim=64, depth=4, num_heads=2, mlp_ratio=4.0, global_pool="avg")
# digits32-vit (issue 25): big enough for structured criteria to separate, where digits-vit's 2 heads per block
# make a head all or nothing: 32x32 inputs (8x8 digits upsampled 4x), 4x4 patches -> 64 tokens + cls, 6 blocks
# of 6 heads (head dim 16, width 96, 384 neurons). Trains on CPU in minutes; benchmarks use it, CI does not.
_DIGITS32_ARCH = dict(patch_size=4, embed_dim=96, depth=6, num_heads=6, mlp_ratio=4.0, global_pool="avg")
PRESETS: dict[str, PresetSpec] = {
    "digits-vit": PresetSpec(dataset="digits", image_size=16, num_classes=10, arch=_DIGITS_ARCH),
    "digits04-vit": PresetSpec(dataset="digits-0-4", image_size=16, num_classes=5, arch=_DIGITS_ARCH),
    "digits32-vit": PresetSpec(dataset="digits", image_size=32, num_classes=10, arch=_DIGITS32_ARCH),
}


# Presets have no timm name of their own; timm's ViT constructors let kwargs override the whole
# architecture, so this name plus a preset's kwargs builds exactly the preset's VisionTransformer.
PRESET_TIMM_NAME = "vit_tiny_patch16_224"


def timm_spec(name: str, *, num_classes: int, image_size: int) -> tuple[str, dict[str, Any]]:
    """`(timm name, kwargs)` such that `timm.create_model(name, **kwargs)` builds the architecture that
    `create_model` builds for a job on data with `num_classes` classes of `image_size` pixels."""
    if name in PRESETS:
        spec = PRESETS[name]
        return PRESET_TIMM_NAME, {"img_size": spec.image_size, **spec.arch, "num_classes": num_classes}
    return name, {"num_classes": num_classes, "img_size": image_size}


def _unknown(name: str) -> UnknownModelError:
    import timm

    close = difflib.get_close_matches(name, [*PRESETS, *timm.list_models()], n=5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) nor a timm architecture{hint}"
    )


def create_model(
    name: str = "digits-vit",
    *,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build an untrained preset or timm model; with `checkpoint`, load its weights (masks are not applied
    here: they come back from `load_checkpoint`, and the saved weights are already zero where pruned)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in PRESETS:
        spec = PRESETS[name]
        defaults = {"img_size": spec.image_size, "num_classes": spec.num_classes, **spec.arch}
        model: nn.Module = VisionTransformer(**{**defaults, **kwargs})
    elif timm.is_model(name):
        model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        raise _unknown(name)
    if checkpoint is not None:
        state, _, _ = load_checkpoint(checkpoint)
        model.load_state_dict(state)
    return model
