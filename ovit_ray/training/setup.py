"""Resolve the (model, data, masks) triple every job starts from: preset, timm name, or checkpoint."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits, load_dataset
from ovit_ray.models import PRESETS, create_model, load_checkpoint
from ovit_ray.training.preset import load_preset_model, preset_dataset
from ovit_ray.training.spec import DataKnobs, TrainSpec


@dataclass
class JobStart:
    model: nn.Module
    data: DatasetSplits
    masks: dict[str, torch.Tensor]  # from the checkpoint, empty for a dense start
    source: str  # human-readable: which weights were loaded
    structure: dict[str, Any] | None = None  # a structured checkpoint's shape: later checkpoints carry it on


def job_data(
    model_name: str,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    split_seed: int = 0,
    augment: str = "none",
) -> DatasetSplits:
    """The data a job on `model_name` uses: a preset on its own dataset gets the split it was trained on."""
    preset = PRESETS.get(model_name)
    dataset = dataset or (preset.dataset if preset else "digits")
    if preset is not None and dataset == preset.dataset:
        return preset_dataset(model_name, augment=augment)
    image_size = preset.image_size if preset else None
    return load_dataset(dataset, root=data_root, image_size=image_size, seed=split_seed, augment=augment)


def job_start(spec: DataKnobs, augment: str = "none") -> JobStart:
    """The model and data a job of `spec` starts from (its model, checkpoint, dataset, data root, split)."""
    return build_model_and_data(
        spec.model,
        checkpoint=spec.checkpoint,
        dataset=spec.dataset,
        data_root=spec.data_root,
        split_seed=spec.split_seed,
        augment=augment,
        progress=False,
    )


def with_structure(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """The model shrunk to the heads and neurons per block a structured checkpoint records (its `structure`
    meta), merging tokens as it records, or given the depth edits a depth-pruned one records (its
    `depth_structure`: dropped attention, merged MLPs), so that checkpoint's weights fit and behave; else the
    model itself."""
    from ovit_ray.pruning.depth import rebuild_depth
    from ovit_ray.pruning.structured import merge_tokens, rebuild

    if meta.get("depth_structure"):
        return rebuild_depth(model, meta["depth_structure"])
    structure = meta.get("structure")
    if not structure:
        return model
    small = rebuild(model, structure)
    return merge_tokens(small, structure["merge_r"]) if any(structure.get("merge_r") or ()) else small


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str, target: str) -> None:
    """`load_state_dict(strict=True)`, a mismatch (another head size, another architecture) as one line."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"{what} does not fit {target}: {detail}") from None


def new_model(model_name: str, data: DatasetSplits) -> nn.Module:
    """`model_name` with fresh weights, its head sized to `data`'s classes (a timm name: also its image size)."""
    timm_args: dict[str, Any] = {} if model_name in PRESETS else {"img_size": data.image_size}
    return create_model(model_name, num_classes=data.num_classes, **timm_args)


def checkpoint_model(
    model_name: str, checkpoint: str, data: DatasetSplits, dataset: str
) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, Any]]:
    """(model, masks, meta) of `checkpoint` for `model_name` on `data` (shrunk as it records); a file that is
    missing, corrupt or shaped for another model or dataset fails in one line."""
    state, masks, meta = load_checkpoint(checkpoint)
    model = with_structure(new_model(model_name, data), meta)
    load_weights(model, state, f"checkpoint {checkpoint}", f"{model_name} on {dataset}")
    return model, masks, meta


def build_model_and_data(
    model_name: str = "digits-vit",
    *,
    checkpoint: str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    split_seed: int = 0,
    augment: str = "none",
    progress: bool = True,
) -> JobStart:
    """Presets default to their own dataset and, without a checkpoint, to their cached trained weights.

    A preset on its own dataset always uses the split it was trained on, so its validation images were
    never seen in training. A timm model without a checkpoint starts from random weights (nothing is
    downloaded), sized to the dataset's classes and resolution. The split depends on `split_seed` only,
    never on a run's seed, so runs with different seeds are evaluated on the same images. `augment`
    (none|light|deit) applies to the training split only.
    """
    preset = PRESETS.get(model_name)
    dataset = dataset or (preset.dataset if preset else "digits")
    data = job_data(model_name, dataset=dataset, data_root=data_root, split_seed=split_seed, augment=augment)
    masks: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    if checkpoint is not None:
        model, masks, meta = checkpoint_model(model_name, checkpoint, data, dataset)
        source = f"checkpoint {checkpoint}"
    elif preset is not None and dataset == preset.dataset:
        model = load_preset_model(model_name, progress=progress)
        source = f"preset {model_name} (trained, cached)"
    else:
        model = new_model(model_name, data)
        source = f"{model_name} with random initial weights (no checkpoint given)"
    return JobStart(model=model, data=data, masks=masks, source=source, structure=meta.get("structure"))


def distillation_teacher(spec: TrainSpec, model: nn.Module) -> nn.Module:
    """The frozen teacher `spec.distill_teacher` names: a copy of the starting `model` ("start"), the dense
    weights of `spec.model` ("model": a preset's trained weights, for a pruned or shrunk checkpoint), or a
    checkpoint file."""
    if spec.distill_teacher == "start":
        teacher = copy.deepcopy(model)
    else:
        teacher = build_model_and_data(
            spec.model,
            checkpoint=None if spec.distill_teacher == "model" else spec.distill_teacher,
            dataset=spec.dataset,
            data_root=spec.data_root,
            split_seed=spec.split_seed,
            progress=False,
        ).model
    return teacher.eval().requires_grad_(False)
