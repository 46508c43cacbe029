"""Transfer of a (pruned) source model to a downstream dataset: new head, full fine-tuning.

Modes (Iofinova et al., "How well do sparse ImageNet models transfer?"): `sparse` keeps the source
masks through every optimizer step (the pruned weights stay zero: the question the transfer ablation
asks), `dense` drops them and uses the pruned weights only as a starting point. The checkpoint of the
best validation epoch is the one reported, with its test top-1; the source's own test top-1 comes
with it so the row reads "upstream vs downstream".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits, load_dataset, num_samples
from ovit_ray.models import PRESETS
from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, select_prunable
from ovit_ray.training.loop import evaluate, make_loader, train_one_epoch
from ovit_ray.training.schedules import build_lr_schedule
from ovit_ray.training.setup import build_model_and_data

MODES = ("sparse", "dense")


@dataclass(frozen=True)
class TransferSpec:
    """One transfer run. `checkpoint=None` transfers the source model's dense weights (the reference)."""

    dataset: str
    source_model: str = "digits-vit"
    checkpoint: str | None = None
    data_root: str | None = None
    mode: str = "sparse"
    epochs: int = 10
    lr: float = 1e-3
    lr_min: float = 1e-5
    warmup_epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: str = "light"
    seed: int = 0
    split_seed: int = 0
    max_steps_per_epoch: int | None = None  # caps an epoch (tests); None = the whole split
    cpus: float = 1.0
    gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")


@dataclass
class TransferStart:
    model: nn.Module
    masks: MaskSet | None  # kept masks (sparse mode) or None (dense mode)
    data: DatasetSplits
    source_top1: float
    source_sparsity: float


def _input_config(model_name: str, model: nn.Module) -> dict[str, Any]:
    """Image size and normalisation of the source: the preset's, or timm's `pretrained_cfg` where it has one."""
    if model_name in PRESETS:
        return {"image_size": PRESETS[model_name].image_size}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    out: dict[str, Any] = {}
    if "input_size" in cfg:
        out["image_size"] = int(cfg["input_size"][-1])
    if "mean" in cfg and "std" in cfg:
        out["mean"], out["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
    return out


def prepare_transfer(spec: TransferSpec, *, device: str = "cpu") -> TransferStart:
    """Source model (weights, masks, source test top-1), the target data, and a fresh head for it."""
    torch.manual_seed(spec.seed)
    source = build_model_and_data(spec.source_model, checkpoint=spec.checkpoint, progress=False)
    model = source.model.to(device)
    masks = MaskSet(source.masks) if source.masks else MaskSet.dense(select_prunable(model, DEFAULT_PATTERNS))
    masks.apply(model)
    test_loader = make_loader(source.data.test, spec.eval_batch_size, shuffle=False, seed=spec.seed)
    source_top1 = evaluate(model, test_loader, device=device)["top1"]
    data = load_dataset(
        spec.dataset,
        root=spec.data_root,
        seed=spec.split_seed,
        augment=spec.augment,
        **_input_config(spec.source_model, model),
    )
    reset_classifier = model.reset_classifier  # timm: a new, randomly initialised linear head
    if not callable(reset_classifier):
        raise ValueError(f"{spec.source_model}: no reset_classifier method (not a timm model)")
    reset_classifier(data.num_classes)
    model.to(device)
    return TransferStart(
        model=model,
        masks=masks if spec.mode == "sparse" else None,
        data=data,
        source_top1=source_top1,
        source_sparsity=masks.sparsity(),
    )


def prunable_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights among the prunable ones (what the masks promise)."""
    return MaskSet.dense(select_prunable(model, DEFAULT_PATTERNS)).sparsity()


def run_transfer(
    spec: TransferSpec, *, device: str = "cpu", start: TransferStart | None = None
) -> dict[str, Any]:
    """Fine-tune the whole model on the target; returns the row of the best validation epoch."""
    began = time.perf_counter()
    start = start or prepare_transfer(spec, device=device)
    model, masks, data = start.model, start.masks, start.data
    torch.manual_seed(spec.seed)
    train_loader = make_loader(data.train, spec.batch_size, shuffle=True, seed=spec.seed)
    val_loader, test_loader = (
        make_loader(split, spec.eval_batch_size, shuffle=False, seed=spec.seed)
        for split in (data.val, data.test)
    )
    steps = (
        len(train_loader)
        if spec.max_steps_per_epoch is None
        else min(spec.max_steps_per_epoch, len(train_loader))
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    schedule = build_lr_schedule(
        "cosine",
        max_lr=spec.lr,
        min_lr=spec.lr_min,
        total_steps=spec.epochs * steps,
        warmup_steps=min(spec.warmup_epochs * steps, spec.epochs * steps - 1),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    hook = masks.attach(optimizer, model) if masks is not None else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
    best: dict[str, Any] = {"val_top1": -1.0}
    for epoch in range(spec.epochs):
        batches = (b for _, b in zip(range(steps), train_loader, strict=False))
        train_one_epoch(model, batches, optimizer, loss_fn=loss_fn, scheduler=scheduler, device=device)
        val = evaluate(model, val_loader, device=device)["top1"]
        if val > best["val_top1"]:
            best = {
                "val_top1": val,
                "top1": evaluate(model, test_loader, device=device)["top1"],
                "best_epoch": epoch,
            }
    if hook is not None:
        hook.remove()
    seconds = time.perf_counter() - began
    return {
        "mode": spec.mode,
        "dataset": spec.dataset,
        "source_model": spec.source_model,
        "checkpoint": spec.checkpoint,
        "source_top1": start.source_top1,
        "achieved_sparsity": start.source_sparsity,
        "final_sparsity": prunable_sparsity(model),
        "top1": best["top1"],
        "val_top1": best["val_top1"],
        "best_epoch": best["best_epoch"],
        "epochs": spec.epochs,
        "seed": spec.seed,
        "num_classes": data.num_classes,
        "train_images": num_samples(data.train),
        "seconds": seconds,
        "cpu_hours": seconds * spec.cpus / 3600,
        "gpu_hours": seconds * spec.gpus / 3600,
    }
