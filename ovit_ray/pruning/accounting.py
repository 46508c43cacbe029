"""Parameter and FLOP accounting, dense vs non-zero, per layer and in total.

FLOPs count one multiply-add as 2 FLOPs per image, measured by running one image through forward hooks,
so any timm model works. Linear and convolution layers scale with their non-zero weights (what sparse
kernels can exploit); attention's two token-by-token products (q k^T and attn v) do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ovit_ray.pruning.masks import MaskSet


@dataclass(frozen=True)
class LayerCount:
    name: str
    kind: str
    params_dense: int
    params_nonzero: int
    flops_dense: int
    flops_nonzero: int


@dataclass(frozen=True)
class Accounting:
    """params_total counts every parameter; params_nonzero is params_total minus the masked-out weights."""

    params_total: int
    params_prunable: int
    params_nonzero: int
    flops_dense: int
    flops_nonzero: int
    layers: list[LayerCount] = field(default_factory=list)

    @property
    def flops_reduction(self) -> float:
        return self.flops_dense / self.flops_nonzero if self.flops_nonzero else float("inf")


def _weight_flops(module: nn.Linear | nn.Conv2d, output: torch.Tensor, weight_elems: int) -> int:
    """2 FLOPs per weight per output position (tokens for Linear, pixels for Conv2d), for one image."""
    out_dim = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    return 2 * (output[0].numel() // out_dim) * weight_elems


@torch.no_grad()
def count_params_and_flops(
    model: nn.Module, masks: MaskSet | None, input_size: tuple[int, int, int]
) -> Accounting:
    """Count for one image of `input_size` (C, H, W); pruned weights come from `masks`."""
    pruned_per_param = {name: int((~mask).sum()) for name, mask in (masks.items() if masks else [])}
    module_of = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            module_of[f"{module_name}.{param_name}" if module_name else param_name] = module_name
    pruned_per_module: dict[str, int] = {}
    for name, pruned in pruned_per_param.items():
        pruned_per_module[module_of[name]] = pruned_per_module.get(module_of[name], 0) + pruned

    layers: list[LayerCount] = []

    def hook(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear | nn.Conv2d):
                dense = module.weight.numel()
                nonzero = dense - pruned_per_module.get(name, 0)
                layers.append(
                    LayerCount(
                        name,
                        type(module).__name__,
                        dense,
                        nonzero,
                        _weight_flops(module, output, dense),
                        _weight_flops(module, output, nonzero),
                    )
                )
            else:  # attention core: q k^T and attn v, each 2 * N^2 * C FLOPs
                tokens, channels = inputs[0].shape[-2], inputs[0].shape[-1]
                flops = 4 * tokens * tokens * channels
                layers.append(LayerCount(f"{name}.core", "attention", 0, 0, flops, flops))

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d)
        or (type(module).__name__ == "Attention" and hasattr(module, "qkv"))
    ]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    params_total = sum(p.numel() for p in model.parameters())
    total_pruned = sum(pruned_per_param.values())
    prunable = sum(m.numel() for _, m in masks.items()) if masks else 0
    return Accounting(
        params_total=params_total,
        params_prunable=prunable,
        params_nonzero=params_total - total_pruned,
        flops_dense=sum(layer.flops_dense for layer in layers),
        flops_nonzero=sum(layer.flops_nonzero for layer in layers),
        layers=layers,
    )
