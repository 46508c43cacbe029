"""What an exported model's card says, gathered from the result row, the checkpoint and the rebuilt model.

The card keeps the keys earlier cards had (timm_model, timm_kwargs, structure, depth_structure, knobs,
source, ...) and adds what a person deploying the model needs: the preprocessing the data layer really
applies (`data.Preprocessing`), class names, what kind of pruning it is and what it kept per block, MACs
and parameters (analytic `DepthCosts` for ViTs, which covers dense, shrunk, token-merging and depth-pruned
ones; forward hooks otherwise), the run's measured speed when its row has one, and the splits with sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits, num_samples
from ovit_ray.orchestration.tracking.card import ModelCard

Row = Mapping[str, Any]
# the result columns a row's speed is in (structured rows), under the card's names
SPEED_COLUMNS = {
    "latency_ms": "latency_ms",
    "latency_p90_ms": "latency_p90_ms",
    "latency_dense_ms": "latency_dense_ms",
    "throughput_ips": "throughput_ips",
    "throughput_dense_ips": "throughput_dense_ips",
    "speedup_latency": "speedup_latency",
    "speedup_throughput": "speedup_throughput",
    "speed_batch": "batch",
    "speed_threads": "threads",
    "speed_device": "device",
    "torch_version": "torch_version",
}
CHECKPOINT_COLUMNS = ("best_checkpoint", "checkpoint", "kept_model")  # where, not what: not knobs


def pruning_kinds(card: Mapping[str, Any], pattern: str | None) -> list[str]:
    """What kind of pruned model this is, every kind that applies (e.g. OPTIN-shrunk, then 2:4)."""
    kinds = []
    if card.get("depth_structure"):
        kinds.append("depth-pruned (attention dropped / MLPs merged)")
    structure = card.get("structure") or {}
    if structure:
        kinds.append(f"shrunk ({card.get('method')}: heads and MLP neurons removed)")
    if any(structure.get("merge_r") or ()):
        kinds.append("token-merged (ToMe)")
    if pattern:
        kinds.append(f"N:M ({pattern}, masks folded in)")
    elif card.get("mask_sparsity"):
        kinds.append("unstructured (masks folded in)")
    return kinds or ["dense"]


def _kept(model: nn.Module, dense: nn.Module, card: Mapping[str, Any]) -> dict[str, Any]:
    from ovit_ray.pruning.depth import depth_structure
    from ovit_ray.pruning.structured import block_widths

    try:
        structure = depth_structure(model)
        heads_dense, neurons_dense = block_widths(dense)
    except ValueError:  # not a ViT: no per-block structure to report
        return {}
    merge_r = (card.get("structure") or {}).get("merge_r")
    return {
        **structure,
        "heads_dense": list(heads_dense),
        "neurons_dense": list(neurons_dense),
        "merge_r": merge_r,
    }


def _costs(
    model: nn.Module, dense: nn.Module, masks: Mapping[str, torch.Tensor], data: DatasetSplits
) -> tuple[dict[str, Any], dict[str, int]]:
    """(MACs, parameters) per image of the pruned model, beside the dense architecture's."""
    from ovit_ray.pruning import MaskSet, count_params_and_flops
    from ovit_ray.pruning.depth import DepthCosts

    shape = (data.in_chans, data.image_size, data.image_size)
    counted = count_params_and_flops(
        model, MaskSet({k: m.bool() for k, m in masks.items()}) if masks else None, shape
    )
    try:
        macs, dense_macs = DepthCosts.of(model).macs(), DepthCosts.of(dense).macs()
        how = "analytic multiply-adds per image (heads, neurons, tokens, merged MLPs, patch embedding, classifier)"
    except ValueError:  # not a ViT: the Linear and conv layers' multiply-adds, counted by forward hooks
        macs = dense_macs = counted.flops_dense // 2
        how = "multiply-adds of the Linear and conv layers, counted by forward hooks"
    pruned_macs = (counted.flops_dense - counted.flops_nonzero) // 2
    total = sum(p.numel() for p in model.parameters())
    params = {
        "total": total,
        "nonzero": total - sum(int((~m.bool()).sum()) for m in masks.values()),
        "dense": sum(p.numel() for p in dense.parameters()),
    }
    return {
        "per_image": macs,
        "dense": dense_macs,
        "nonzero": macs - pruned_macs if masks else None,
        "ratio": macs / dense_macs,
        "counted": how,
    }, params


def card_facts(
    card: ModelCard,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    data: DatasetSplits,
    row: Row,
    pattern: str | None,
) -> dict[str, Any]:
    """The card's descriptive keys: preprocessing, classes, kinds, kept structure, costs, speed, splits."""
    import timm

    with torch.device("meta"):  # the dense architecture, for its costs and widths: shapes, no weights
        dense = timm.create_model(card.timm_model, pretrained=False, **card.timm_kwargs)
    macs, params = _costs(model, dense, masks, data)
    speed = {name: row.get(column) for column, name in SPEED_COLUMNS.items()}
    facts: dict[str, Any] = {
        "preprocessing": asdict(data.preprocessing) if data.preprocessing else None,
        "classes": list(data.classes) or None,
        "kept": _kept(model, dense, card.model_dump()),
        "macs": macs,
        "params": params,
        "speed": speed if speed["latency_ms"] is not None else None,
        "test": {
            "split": "test",
            "images": num_samples(data.test),
            "top1": card.top1,
            "note": f"the fixed held-out test split of {card.dataset} (split seed {card.split_seed}); only reported",
        },
        "validation": {"split": "val", "images": num_samples(data.val), "top1": card.val_top1},
    }
    facts["kinds"] = pruning_kinds({**card.model_dump(), **facts}, pattern)
    return facts
