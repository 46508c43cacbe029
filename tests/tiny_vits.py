"""Small untrained timm ViTs and unit masks shared by the structured- and depth-pruning tests."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ovit_ray.pruning.structured import UnitMasks


def tiny_vit(*, random_norms: bool = False, **kwargs: object) -> nn.Module:
    """3 blocks of 4 heads of 8 and 64 neurons over 16 + 1 tokens (timm's arguments override), with random
    biases (and, with `random_norms`, norm/LayerScale affines): timm starts them at 0 and 1, which would
    hide a lost bias or an unfolded gamma."""
    torch.manual_seed(0)
    arch = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=7)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**arch, **kwargs}).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
            elif random_norms and ("norm" in name or "ls" in name):
                param.uniform_(0.5, 1.5)
    return model


def units_removed(model: nn.Module, seed: int, first_heads: int = 1) -> UnitMasks:
    """About 60% of the heads and half the neurons kept at random; block 0 keeps its first `first_heads`
    heads, block 1 loses every head and block 2 every neuron (the zero-width cases)."""
    g = torch.Generator().manual_seed(seed)
    dense = UnitMasks.dense(model)
    heads = [torch.rand(len(m), generator=g) < 0.6 for m in dense.heads]
    neurons = [torch.rand(len(m), generator=g) < 0.5 for m in dense.neurons]
    heads[0][:first_heads], heads[1][:], neurons[2][:] = True, False, False
    return UnitMasks(tuple(heads), tuple(neurons))
