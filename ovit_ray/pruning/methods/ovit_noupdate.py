"""oViT without the weight update (ablation): oViT's selection, the survivors keep their values."""

from __future__ import annotations

from ovit_ray.pruning.methods._registry import register_method
from ovit_ray.pruning.methods.ovit import OViT


@register_method
class OViTNoUpdate(OViT):
    """Measures how much of oViT's accuracy comes from the update rather than from the selection."""

    name = "ovit-noupdate"
    update_weights = False
