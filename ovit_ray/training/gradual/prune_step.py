"""One pruning step of a data-parallel run: every worker collects its share of the gradients, the
Fisher sums are added over workers, rank 0 plans and prunes, and every worker leaves with rank 0's
weights and masks (broadcast), so the replicas stay identical."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ovit_ray.pruning import MaskSet, Pruner, PruneSettings
from ovit_ray.training.comm import Comm


def prune_step(
    model: nn.Module,
    params: dict[str, nn.Parameter],
    masks: MaskSet,
    settings: PruneSettings,
    grad_batches: Iterable[Any],
    sparsity: float,
    comm: Comm,
) -> MaskSet:
    """The masks after pruning to `sparsity` (the model's weights are updated in place)."""
    pruner = Pruner(model, params, masks, settings)
    pruner.collect(grad_batches)
    if pruner.fisher is not None and comm.size > 1:
        pruner.fisher.reduce(comm.sum_tensor_, comm.sum)
    if comm.rank == 0:
        pruner.plan()
        masks = pruner.apply(sparsity)
    del pruner
    if comm.size > 1:
        with torch.no_grad():
            for tensor in model.state_dict().values():
                comm.broadcast_(tensor)
        device = next(model.parameters()).device
        flags = {name: mask.to(device, torch.uint8) for name, mask in masks.items()}
        for flag in flags.values():
            comm.broadcast_(flag)
        masks = MaskSet(flags)
    return masks
