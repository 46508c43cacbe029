"""Sparsity and learning-rate schedules for gradual pruning (pure functions, plain values in).

Epoch convention: "prune at epoch e" means the pruning step runs before training epoch e.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

Interpolation = Literal["linear", "cubic"]
LRScheduleName = Literal["cyclic_linear", "cosine", "constant"]


def _check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _interpolate(init: float, final: float, x: float, interpolation: Interpolation) -> float:
    """Sparsity at progress x in [0, 1]; cubic is Zhu & Gupta (fast early, slow late)."""
    if interpolation == "linear":
        return init + (final - init) * x
    if interpolation == "cubic":
        return final + (init - final) * (1.0 - x) ** 3
    raise ValueError(f"interpolation must be 'linear' or 'cubic', got {interpolation!r}")


def sparsity_steps(
    init: float,
    final: float,
    start_epoch: int,
    end_epoch: int,
    update_frequency: int,
    interpolation: Interpolation = "linear",
) -> list[tuple[int, float]]:
    """Pruning steps ``(epoch, target sparsity)`` of a gradual run.

    Prunes at ``start_epoch`` (to ``init``), every ``update_frequency`` epochs after it, and at
    ``end_epoch`` (to ``final``) even when it is off that grid.
    """
    _check_sparsity("init", init)
    _check_sparsity("final", final)
    if final < init:
        raise ValueError(f"final must be >= init ({init!r}), got {final!r}")
    _check_int("start_epoch", start_epoch, 0)
    _check_int("end_epoch", end_epoch, start_epoch)
    _check_int("update_frequency", update_frequency, 1)
    _interpolate(init, final, 0.0, interpolation)  # validates the name
    if end_epoch == start_epoch:
        return [(start_epoch, final)]
    epochs = list(range(start_epoch, end_epoch, update_frequency)) + [end_epoch]
    span = end_epoch - start_epoch
    return [(e, _interpolate(init, final, (e - start_epoch) / span, interpolation)) for e in epochs]


@dataclass(frozen=True)
class TargetWindow:
    """Fine-tune window after a sweep target is reached: epochs ``[start, end)`` at ``sparsity``."""

    sparsity: float
    start: int
    end: int


@dataclass(frozen=True)
class SweepSchedule:
    """Pruning steps of one sweep run plus the windows in which each target's best checkpoint is kept."""

    steps: list[tuple[int, float]]
    windows: list[TargetWindow]

    @property
    def total_epochs(self) -> int:
        return self.windows[-1].end


def sparsity_steps_through_targets(
    targets: Sequence[float],
    *,
    window_epochs: int,
    start_epoch: int = 0,
    init: float = 0.0,
    steps_per_target: int = 1,
    update_frequency: int = 1,
    interpolation: Interpolation = "linear",
) -> SweepSchedule:
    """Schedule of the sparsity-sweep pipeline: one gradual run that hits every target exactly.

    The ramp to each target (from ``init``, then from the previous target) has ``steps_per_target``
    pruning steps, ``update_frequency`` epochs apart, the last of which prunes to the target itself
    (intermediate values interpolated). The target's fine-tune window starts at the epoch it is
    reached and lasts ``window_epochs`` epochs; the next ramp starts right after the window, and
    the run ends with the last window (``total_epochs``). Example: targets (0.5, 0.6), window 3,
    one step per target -> steps [(0, 0.5), (3, 0.6)], windows [0, 3) and [3, 6).
    """
    if not targets:
        raise ValueError(f"targets must not be empty, got {list(targets)!r}")
    _check_sparsity("init", init)
    for t in targets:
        _check_sparsity("targets", t)
    previous = [init, *targets]
    if any(b <= a for a, b in pairwise(previous)):
        raise ValueError(
            f"targets: must be strictly increasing and above init={init!r}, got {list(targets)!r}"
        )
    _check_int("window_epochs", window_epochs, 1)
    _check_int("start_epoch", start_epoch, 0)
    _check_int("steps_per_target", steps_per_target, 1)
    _check_int("update_frequency", update_frequency, 1)
    _interpolate(init, init, 0.0, interpolation)  # validates the name

    steps: list[tuple[int, float]] = []
    windows: list[TargetWindow] = []
    epoch = start_epoch
    for lo, target in pairwise(previous):
        for i in range(1, steps_per_target + 1):
            value = (
                target
                if i == steps_per_target
                else _interpolate(lo, target, i / steps_per_target, interpolation)
            )
            steps.append((epoch, value))
            if i < steps_per_target:
                epoch += update_frequency
        windows.append(TargetWindow(target, epoch, epoch + window_epochs))
        epoch += window_epochs
    return SweepSchedule(steps, windows)


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate per optimizer step; calling it gives the multiplier for ``LambdaLR``.

    Use it as ``LambdaLR(optimizer, schedule)`` with the optimizer created at ``lr=max_lr``.
    Steps past ``total_steps`` keep the last value (LambdaLR may be stepped once more).
    """

    name: LRScheduleName
    max_lr: float
    min_lr: float
    total_steps: int
    boundaries: tuple[int, ...]  # cycle starts after warmup, then total_steps
    warmup_steps: int = 0

    def lr_at(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step!r}")
        step = min(step, self.total_steps - 1)
        if step < self.warmup_steps:
            # Ends one step below max so the first post-warmup step is max; never 0 at step 0.
            return self.max_lr * (step + 1) / (self.warmup_steps + 1)
        if self.name == "constant":
            return self.max_lr
        if self.name == "cosine":
            return self._decay(step - self.warmup_steps, self.total_steps - self.warmup_steps, cosine=True)
        start, end = max((a, b) for a, b in pairwise(self.boundaries) if a <= step)
        return self._decay(step - start, end - start, cosine=False)

    def _decay(self, t: int, length: int, *, cosine: bool) -> float:
        """max at t=0, min at t=length-1 (reached on the last step, never on the first)."""
        if length <= 1:
            return self.max_lr
        x = t / (length - 1)
        frac = (1.0 + math.cos(math.pi * x)) / 2.0 if cosine else 1.0 - x
        return self.min_lr + (self.max_lr - self.min_lr) * frac

    def __call__(self, step: int) -> float:
        return self.lr_at(step) / self.max_lr


def build_lr_schedule(
    name: LRScheduleName,
    *,
    max_lr: float,
    min_lr: float,
    total_steps: int,
    cycle_starts: Sequence[int] = (),
    warmup_steps: int = 0,
) -> LRSchedule:
    """Validated LR schedule.

    ``cyclic_linear``: a cycle starts after warmup and at each step in ``cycle_starts`` (the pruning
    steps); within a cycle the LR starts at ``max_lr`` and falls linearly to ``min_lr`` on the
    cycle's last step (unlike the reference code, the first step of a cycle is never at min).
    Cycle starts inside the warmup are absorbed by it. ``cosine``: one half-cosine from ``max_lr``
    after warmup to ``min_lr`` on the last step. ``constant``: ``max_lr`` after warmup.
    """
    if name not in ("cyclic_linear", "cosine", "constant"):
        raise ValueError(f"name must be one of cyclic_linear, cosine, constant; got {name!r}")
    if not max_lr > 0:
        raise ValueError(f"max_lr must be > 0, got {max_lr!r}")
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"min_lr must be in [0, max_lr={max_lr!r}], got {min_lr!r}")
    _check_int("total_steps", total_steps, 1)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps!r}")
    bad = [c for c in cycle_starts if not 0 <= c < total_steps]
    if bad:
        raise ValueError(f"cycle_starts must lie in [0, total_steps={total_steps}), got {bad!r}")
    starts = sorted({warmup_steps, *(c for c in cycle_starts if c > warmup_steps)})
    return LRSchedule(name, max_lr, min_lr, total_steps, (*starts, total_steps), warmup_steps)
