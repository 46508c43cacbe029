"""Trained presets: train once on first use, then serve the cached checkpoint.

The cache file name carries a hash of the architecture and the recipe, so changing either one
retrains instead of silently serving stale weights. A file lock makes concurrent callers (e.g.
several Ray workers on one node) wait for a single trainer instead of training in parallel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from rich.progress import Progress
from torch import nn

from ..data import DatasetSplits, load_dataset
from ..models import PRESETS, UnknownModelError, cache_dir, create_model, load_checkpoint, save_checkpoint
from .loop import evaluate, make_loader, train_one_epoch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PresetRecipe:
    """How a preset is trained: AdamW, label smoothing, linear warmup then cosine decay, fixed seeds."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    augment: str = "light"
    split_seed: int = 0  # fixes which samples are held out; preset_dataset() uses the same split
    test_fraction: float = 0.2  # held-out test images (part of the cache key: never train on them)
    seed: int = 0  # model init and shuffling


RECIPES: dict[str, PresetRecipe] = {
    "digits-vit": PresetRecipe(),
    "digits04-vit": PresetRecipe(),
    "digits32-vit": PresetRecipe(),
}


def _recipe(name: str) -> PresetRecipe:
    if name not in RECIPES:
        raise UnknownModelError(f"unknown preset {name!r}; presets: {', '.join(RECIPES)}")
    return RECIPES[name]


def preset_dataset(name: str = "digits-vit", *, augment: str = "none") -> DatasetSplits:
    """The dataset and splits the preset was trained on, so its val and test splits are truly held out."""
    recipe = _recipe(name)
    spec = PRESETS[name]
    return load_dataset(
        spec.dataset,
        image_size=spec.image_size,
        seed=recipe.split_seed,
        test_fraction=recipe.test_fraction,
        augment=augment,
    )


def _checkpoint_path(name: str, recipe: PresetRecipe) -> Path:
    spec = dataclasses.asdict(PRESETS[name])
    blob = json.dumps({"spec": spec, "recipe": dataclasses.asdict(recipe)}, sort_keys=True)
    return cache_dir() / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}.safetensors"


def _cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_preset(name: str, recipe: PresetRecipe, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train preset `name` from scratch on CPU with `recipe`; returns the model and its meta."""
    torch.manual_seed(recipe.seed)
    data = preset_dataset(name, augment=recipe.augment)
    model = create_model(name)
    train_loader = make_loader(data.train, recipe.batch_size, shuffle=True, seed=recipe.seed)
    val_loader = make_loader(data.val, 256, shuffle=False, seed=recipe.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        _cosine_with_warmup(recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch),
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    start = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"training {name}", total=recipe.epochs)
        for _ in range(recipe.epochs):
            stats = train_one_epoch(
                model, train_loader, optimizer, loss_fn=loss_fn, device="cpu", scheduler=scheduler
            )
            bar.update(task, advance=1, description=f"training {name} (train top-1 {stats['top1']:.3f})")
    seconds = time.perf_counter() - start
    val = evaluate(model, val_loader, device="cpu")
    test = evaluate(model, make_loader(data.test, 256, shuffle=False, seed=recipe.seed), device="cpu")
    meta = {
        "preset": name,
        "test_top1": test["top1"],
        "val_top1": val["top1"],
        "val_loss": val["loss"],
        "epochs": recipe.epochs,
        "seconds": round(seconds, 2),
        "recipe": dataclasses.asdict(recipe),
    }
    return model, meta


def preset_checkpoint(name: str = "digits-vit", *, progress: bool = True) -> Path:
    """Path of the trained preset's checkpoint, training (once, under a file lock) if it is missing."""
    recipe = _recipe(name)
    path = _checkpoint_path(name, recipe)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            log.info("training preset %r on CPU (first use; cached at %s)", name, path)
            model, meta = train_preset(name, recipe, progress=progress)
            save_checkpoint(path, model, meta=meta)
            log.info(
                "preset %r trained: test top-1 %.4f (val %.4f) in %.1f s",
                name,
                meta["test_top1"],
                meta["val_top1"],
                meta["seconds"],
            )
    return path


def load_preset_model(name: str = "digits-vit", *, progress: bool = True) -> nn.Module:
    """The trained preset model (in eval mode), training and caching it on first use."""
    return create_model(name, checkpoint=preset_checkpoint(name, progress=progress)).eval()


def preset_meta(name: str = "digits-vit") -> dict:
    """Meta stored with the trained preset (val top-1, epochs, seconds, recipe)."""
    return load_checkpoint(preset_checkpoint(name, progress=False))[2]
