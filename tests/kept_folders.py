"""An output folder holding one kept model of every kind export handles, built in this process (no Ray).

The models are the trained digits preset pruned for real (magnitude masks, 2:4 masks, heads and neurons
removed, the shrunk model merging tokens, attention dropped and an MLP merged); their rows are written in the
one `results.parquet` layout every sweep kind shares (identity, `TargetResult` columns, knobs), with
`kept_model` relative to the folder, and each row's top-1 is measured here on the preset's test split.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from ovit_ray.models import save_checkpoint
from ovit_ray.orchestration.results.schemas import KIND_KEY
from ovit_ray.pruning.depth import anneal_activation, depth_structure, drop_attention, merge_mlp
from ovit_ray.pruning.structured import UnitMasks, merge_tokens, shrink, shrunk_sizes
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.preset import preset_dataset
from ovit_ray.training.setup import build_model_and_data

KINDS = ("unstructured", "nm", "optin", "tome", "depth")
PRUNABLE = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def _magnitude_masks(model: nn.Module, pattern: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    """Half of each prunable weight kept by magnitude: globally per tensor, or n of every m inputs."""
    masks = {}
    for name, weight in model.named_parameters():
        if not name.endswith(PRUNABLE):
            continue
        score = weight.detach().abs()
        if pattern is None:
            masks[name] = score >= score.flatten().median()
        else:
            n, m = pattern
            groups = score.reshape(-1, m)
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(
                1, groups.topk(m - n, dim=1).indices, True
            )
            masks[name] = keep.reshape(weight.shape)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in masks:
                param.mul_(masks[name])
    return masks


def _pruned(kind: str, dense: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """(model, masks, checkpoint meta of its shape) of one kind."""
    model = copy.deepcopy(dense)
    if kind in ("unstructured", "nm"):
        return model, _magnitude_masks(model, None if kind == "unstructured" else (2, 4)), {}
    if kind == "depth":
        drop_attention(model.blocks[3], keep_bias=True)
        anneal_activation(model.blocks[1], 0.0)
        merge_mlp(model.blocks[1])
        return model, {}, {"depth_structure": depth_structure(model)}
    small = shrink(model, UnitMasks.first(model, [2, 1, 0, 2], [200, 128, 64, 0]))
    merges = [3, 3, 2, 0] if kind == "tome" else [0, 0, 0, 0]
    if any(merges):
        merge_tokens(small, merges)
    return small, {}, {"structure": {**shrunk_sizes(small), "merge_r": merges}}


def build_kept_folder(out: Path, preset: Path) -> dict[str, dict[str, Any]]:
    """Write `out/results.parquet` and `out/kept/<kind>.safetensors`; returns the rows by kind."""
    dense = build_model_and_data(checkpoint=str(preset), progress=False).model.eval()
    data = preset_dataset("digits-vit")
    loaders = {s: make_loader(getattr(data, s), 256, shuffle=False, seed=0) for s in ("test", "val")}
    rows = {}
    for kind in KINDS:
        model, masks, shape = _pruned(kind, dense)
        model.eval()
        with torch.no_grad():
            top1, val_top1 = (evaluate(model, loaders[s], device="cpu")["top1"] for s in ("test", "val"))
        meta = {"model": "digits-vit", "dataset": "digits", "split_seed": 0, "method": kind, **shape}
        meta.update(num_classes=data.num_classes, image_size=data.image_size)
        relative = f"kept/{kind}.safetensors"
        save_checkpoint(out / relative, model, masks, meta)
        pruned = (
            sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
            if masks
            else 0.0
        )
        rows[kind] = {
            "sweep": "kept-kinds",
            "kind": "gradual" if masks else "structured",
            "trial_id": kind,
            "target": 0.5 if masks else 0.6,
            "top1": top1,
            "val_top1": val_top1,
            "achieved_sparsity": pruned,
            "best_epoch": 0,
            "kept_model": relative,
            "model": "digits-vit",
            "dataset": "digits",
            "split_seed": 0,
            "method": kind,
            "pattern": "2:4" if kind == "nm" else None,
        }
    table = pa.Table.from_pylist(list(rows.values()))
    pq.write_table(table.replace_schema_metadata({KIND_KEY: b"results"}), out / "results.parquet")
    return rows
