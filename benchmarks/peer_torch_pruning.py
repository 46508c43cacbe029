"""Glue between Torch-Pruning 1.6.1 (the optional `bench` extra) and our structured-pruning axes (issue 25).

Torch-Pruning chooses which heads and MLP neurons of a timm ViT to remove (its dependency graph, its group
importance, its global ranking); everything else is ours, so the comparison is of criteria and allocation
only: the MACs counted by `VitCosts`, the budget matched by a search over Torch-Pruning's pruning ratios, and
the kept units read back as `UnitMasks` so the timed and evaluated model is `shrink(dense, masks)`, checked
equal to Torch-Pruning's own pruned model.

Written for this benchmark (none of Torch-Pruning's example code is used). Two things its ViT example gets
wrong for timm 1.0.31, found in issue 25: its replacement attention forward lacks the `attn_mask` argument that
timm's `Block` passes. Here nothing is replaced: timm's own `Attention.forward` reshapes by `num_heads` and
`attn_dim`, so setting those two after pruning is enough. And its Hessian importance in 1.6.1 keeps only the
last sample's gradient, so it is not used; the criteria are its L1 group magnitude and its first-order Taylor.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from ovit_ray.pruning.structured import UnitMasks, VitCosts, shrink

CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    "tp-l1": lambda: tp.importance.GroupMagnitudeImportance(
        p=1
    ),  # its defaults: mean over the group, mean-normalised
    "tp-taylor": lambda: tp.importance.GroupTaylorImportance(),
}
MAX_RATIO = 0.98  # pruning ratios searched in [0, MAX_RATIO]


@dataclass(frozen=True)
class PeerPrune:
    """Torch-Pruning's choice at one budget: the kept units, the ratios that gave them and the search cost."""

    masks: UnitMasks
    achieved_macs: int
    head_ratio: float
    neuron_ratio: float
    tries: int
    max_logit_diff: float  # Torch-Pruning's pruned model vs shrink(dense, masks) on the calibration batch


def _pruned(
    dense: nn.Module, images: torch.Tensor, labels: torch.Tensor, criterion: str, heads: float, neurons: float
) -> nn.Module:
    """A copy of `dense` with Torch-Pruning's global ranking applied: `heads` of all heads removed (whole
    heads, head dimensions kept) and `neurons` as its channel pruning ratio on the MLP groups; the residual
    width (patch embedding, attention and MLP outputs, classifier) is never pruned."""
    model = copy.deepcopy(dense).eval()
    blocks = list(model.blocks)  # type: ignore[arg-type]
    ignored = [model.patch_embed, model.head, *(b.attn.proj for b in blocks), *(b.mlp.fc2 for b in blocks)]
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # its note on pos_embed / cls_token: residual width is never pruned here
        pruner = tp.pruner.MetaPruner(
            model,
            images[:2],
            importance=CRITERIA[criterion](),
            global_pruning=True,
            pruning_ratio=neurons,
            ignored_layers=ignored,
            num_heads={b.attn.qkv: b.attn.num_heads for b in blocks},
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=heads,
        )
        if criterion == "tp-taylor":  # first-order Taylor needs the gradient of a labelled batch
            model.zero_grad()
            F.cross_entropy(model(images), labels).backward()
        pruner.step()
    model.zero_grad(set_to_none=True)
    for block in blocks:  # timm's own forward then runs the pruned shapes (no replacement forward)
        attn = block.attn
        attn.num_heads = attn.qkv.out_features // (3 * attn.head_dim)
        attn.attn_dim = attn.num_heads * attn.head_dim
    return model


def _kept(dense_rows: torch.Tensor, pruned_rows: torch.Tensor) -> torch.Tensor:
    """Which of `dense_rows` (n x k) survive in `pruned_rows` (n' x k), matched by exact equality."""
    same = (pruned_rows[:, None, :] == dense_rows[None, :, :]).all(-1)
    if not bool((same.sum(1) == 1).all()):
        raise RuntimeError("a pruned unit matches no dense unit, or several")
    return same.any(0)


def kept_units(dense: nn.Module, pruned: nn.Module) -> UnitMasks:
    """The heads (by their query rows) and neurons (by their fc1 rows) that Torch-Pruning kept."""
    heads, neurons = [], []
    for d, p in zip(dense.blocks, pruned.blocks, strict=True):  # type: ignore[call-overload]
        dh, width = d.attn.head_dim, d.attn.qkv.in_features
        heads.append(
            _kept(
                d.attn.qkv.weight[: d.attn.attn_dim].reshape(-1, dh * width),
                p.attn.qkv.weight[: p.attn.attn_dim].reshape(-1, dh * width),
            )
        )
        neurons.append(_kept(d.mlp.fc1.weight, p.mlp.fc1.weight))
    return UnitMasks(tuple(heads), tuple(neurons))


def prune_to_budget(
    dense: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    criterion: str,
    macs_ratio: float,
    tolerance: float = 0.01,
    steps: int = 24,
) -> PeerPrune:
    """Torch-Pruning at `macs_ratio` of the dense MACs (`VitCosts`), within `tolerance` of the requested MACs.

    First one ratio for heads and neurons alike (as its ViT example sets them), bisected; when a whole head
    jumps over the window, the head ratio stays at the last one above the budget and the neuron ratio alone is
    bisected (neurons are fine-grained enough to land in it)."""
    target = macs_ratio * VitCosts.of(dense).macs()
    tries = 0

    def macs(heads: float, neurons: float) -> tuple[nn.Module, int]:
        nonlocal tries
        tries += 1
        model = _pruned(dense, images, labels, criterion, heads, neurons)
        return model, VitCosts.of(model).macs()

    def bisect(
        lo: float, hi: float, heads: Callable[[float], float]
    ) -> tuple[tuple[nn.Module, float, float] | None, float, float]:
        """A hit within the tolerance, else None and the final bracket (MACs above the target at `lo`)."""
        for _ in range(steps):
            mid = (lo + hi) / 2
            model, found = macs(heads(mid), mid)
            if abs(found - target) <= tolerance * target:
                return (model, heads(mid), mid), lo, hi
            lo, hi = (mid, hi) if found > target else (lo, mid)
        return None, lo, hi

    tied, lo, _ = bisect(0.0, MAX_RATIO, lambda r: r)
    if tied is None:  # a whole head jumped over the window: heads stay at the bracket's upper-MACs end
        tied, _, _ = bisect(lo, MAX_RATIO, lambda _: lo)
    if tied is None:
        raise RuntimeError(f"{criterion}: no pruning ratio within {tolerance:.0%} of MACs ratio {macs_ratio}")
    model, head_ratio, neuron_ratio = tied
    masks = kept_units(dense, model)
    with torch.no_grad():
        gap = float((model(images) - shrink(dense, masks).eval()(images)).abs().max())
    return PeerPrune(masks, VitCosts.of(model).macs(), head_ratio, neuron_ratio, tries, gap)
