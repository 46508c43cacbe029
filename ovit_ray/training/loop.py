"""The single-process training loop: one epoch of training, one pass of evaluation.

Kept deliberately plain (nanoGPT-style) because every higher layer -- preset training, gradual
pruning, Ray Train workers -- runs exactly this code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Masks(Protocol):
    """Anything that can re-zero pruned weights (e.g. `ovit_ray.pruning.MaskSet`)."""

    def apply(self, model: nn.Module) -> Any: ...


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int, sampler: Sampler | None = None
) -> DataLoader:
    """A DataLoader whose shuffling order depends only on `seed`; data is in memory, so no workers."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator,
        num_workers=0,
    )


def _autocast(
    device: torch.device | str, scaler: torch.amp.GradScaler | None, dtype: torch.dtype | None = None
) -> contextlib.AbstractContextManager:
    """Mixed precision in `dtype` on any device when given (bf16 autocast on the CPU too, which is how the
    GPU check runs its autocast path without a GPU), else on CUDA only: fp16 when a GradScaler is given,
    bf16 otherwise."""
    kind = torch.device(device).type
    if dtype is not None:
        return torch.autocast(kind, dtype=dtype)
    if kind != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if scaler is not None else torch.bfloat16)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened logits, scaled by T^2 to keep gradient size."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: LossFn,
    device: torch.device | str,
    masks: Masks | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    teacher: nn.Module | None = None,
    distill_weight: float = 0.0,
    distill_temperature: float = 1.0,
    on_step: Callable[[], None] | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Train for one pass over `loader`; returns mean loss, training top-1 and the number of steps.

    `masks.apply(model)` runs after every optimizer step so pruned weights stay exactly zero;
    `scheduler` is stepped per optimizer step (per-step LR schedules), then `on_step()` runs (per-step
    schedules of the model itself, e.g. depth pruning's activation annealing). `amp_dtype` autocasts the
    forward pass to that dtype on any device; None keeps the default (bf16 on CUDA, fp16 with `scaler`).
    """
    model.train()
    if teacher is not None:
        teacher.eval()
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, scaler, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, y)
            if teacher is not None and distill_weight > 0:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                kd = distillation_loss(logits.float(), teacher_logits.float(), distill_temperature)
                loss = (1.0 - distill_weight) * loss + distill_weight * kd
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if masks is not None:
            masks.apply(model)
        if scheduler is not None:
            scheduler.step()
        if on_step is not None:
            on_step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(-1) == y).sum().item()
        seen += len(y)
        steps += 1
    if seen == 0:
        raise ValueError("train_one_epoch got an empty loader")
    return {"loss": total_loss / seen, "top1": correct / seen, "steps": steps}


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device | str
) -> dict[str, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy over the whole loader."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, None):
            logits = model(x).float()
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        seen += len(y)
    if seen == 0:
        raise ValueError("evaluate got an empty loader")
    return {"top1": correct / seen, "loss": total_loss / seen}
