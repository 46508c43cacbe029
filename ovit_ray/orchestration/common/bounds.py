"""The bound table: every count a command takes, bounded by what the data, the model and the machine allow,
and named in the one error line that refuses it (issue 24.10).

Why: `prune -B 1000000` asked for 8 TB of Fisher blocks (exit 70), `-m 1000000` and `--calib-size 1e9` ran
for minutes at gigabytes, `--sparsity 0.9999999` pruned every weight. Fixed caps are checked before anything
loads; the bounds that need the model and the data are checked once both are loaded (a checkpoint may hold
a shrunk model), before the big allocation.

| count | bound | why |
|---|---|---|
| `-B` (block size) | the weights of the largest prunable tensor | a larger block is that tensor, zero-padded |
| `-B` | Fisher blocks, sum of ceil(n/B) * B^2 * 8 bytes, within the device's memory | they are allocated whole |
| `--grad-batch-size` | the train split's images | a gradient's batch comes from it |
| `-m` (gradients) | `MAX_GRAD_PASSES` = 16 passes over the train split: m * batch <= 16 * images | more only repeat images |
| `--calib-size` | the train split's images | calibration images are drawn without repeats |
| `--sparsity` | round(s * d) < d, d the prunable weights (each tensor's with `--scope uniform`) | a weight must remain |
| `--add-trials` | `MAX_ADD_TRIALS` = 10,000 | a typo (`1e9`) started trials until killed |
| `--seed` | 0 .. `MAX_SEED` (2^32 - 1) | numpy's seed range, the run spec's |
| `--device` | cpu, or a CUDA GPU this machine has | `cuda:99` failed inside torch |
| `transfer --epochs`, `--seeds` | `MAX_EPOCHS` (100,000), 0 .. `MAX_SEED` | checked by its knob spec and the sweep file |

Light at import (no torch): the sweep driver reads `MAX_ADD_TRIALS` during `--dry-run`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

MAX_ADD_TRIALS = 10_000
MAX_GRAD_PASSES = 16
GB = 1e9
# The flags `ovit-ray prune` names these counts by.
PRUNE_FLAGS = {
    "block_size": "-B/--block-size",
    "num_grads": "-m/--num-grads",
    "grad_batch_size": "--grad-batch-size",
    "calib_size": "--calib-size",
    "sparsity": "--sparsity",
}


@dataclass(frozen=True)
class PruneFacts:
    """What bounds a pruning job: weights per prunable tensor, train images, bytes of the device's memory."""

    prunable: tuple[int, ...]
    train_size: int
    memory_bytes: int


def at_most(flag: str, value: int, bound: int, why: str) -> None:
    if value > bound:
        raise ValueError(f"{flag}: must be at most {bound} ({why}), got {value}")


def fisher_bytes(numels: Iterable[int], block_size: int, itemsize: int = 8) -> int:
    """Bytes of the block Fisher sums for tensors of `numels` weights (the last block of each padded)."""
    from ovit_ray.tensor_math.blocks import num_blocks

    return sum(num_blocks(n, block_size) for n in numels) * block_size * block_size * itemsize


def check_prune_counts(
    facts: PruneFacts,
    *,
    block_size: int,
    num_grads: int,
    grad_batch_size: int,
    sparsities: Sequence[float] = (),
    calib_size: int | None = None,
    scope: str = "global",
    flags: Mapping[str, str] = PRUNE_FLAGS,
) -> None:
    """One ``ValueError`` naming the flag, the value and the bound, for the first count out of bounds."""
    from ovit_ray.tensor_math.selection import target_count

    n = facts.train_size
    at_most(flags["grad_batch_size"], grad_batch_size, n, "the train split's images")
    if calib_size is not None:
        at_most(flags["calib_size"], calib_size, n, "the train split's images")
    passes = f"{MAX_GRAD_PASSES} passes over the {n} train images at {grad_batch_size} per gradient"
    at_most(flags["num_grads"], num_grads, MAX_GRAD_PASSES * n // grad_batch_size, passes)
    largest = max(facts.prunable, default=0)
    at_most(flags["block_size"], block_size, largest, "the weights of the largest prunable tensor")
    need = fisher_bytes(facts.prunable, block_size)
    if need > facts.memory_bytes:
        raise ValueError(
            f"{flags['block_size']}: the Fisher blocks at B={block_size} need {need / GB:.1f} GB, more than the "
            f"{facts.memory_bytes / GB:.1f} GB of memory of the device; choose a smaller block size"
        )
    groups = [sum(facts.prunable)] if scope == "global" else sorted(facts.prunable)[:1]
    for sparsity in sparsities:
        for d in groups:
            if target_count(sparsity, d) >= d:
                where = "prunable weights" if scope == "global" else "weights of the smallest prunable tensor"
                raise ValueError(
                    f"{flags['sparsity']}: {sparsity} prunes all {d} {where} (round(s * d) = d); "
                    f"it must leave one, i.e. stay below {1 - 0.5 / d:.7f}"
                )


def prune_facts(model: nn.Module, train: Any, patterns: Sequence[str] | None, device: str) -> PruneFacts:
    """The facts of a loaded model and its train split, on `device` (cpu: this machine's memory)."""
    from ovit_ray.data import num_samples
    from ovit_ray.pruning import select_prunable

    tensors = select_prunable(model, patterns)
    return PruneFacts(tuple(p.numel() for p in tensors.values()), num_samples(train), device_memory(device))


def device_memory(device: str) -> int:
    """Bytes of memory on `device`: a CUDA GPU's, else this machine's physical memory."""
    import torch

    where = torch.device(device)
    if where.type == "cuda":
        return int(torch.cuda.get_device_properties(where.index or 0).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_device(name: str, flag: str = "--device") -> None:
    """`cpu`, `cuda` or `cuda:N` that this machine has; one line naming the flag and the value otherwise."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag}: expected cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"{flag}: {name!r} needs a CUDA GPU, and this machine has none")
        if (device.index or 0) >= count:
            raise ValueError(
                f"{flag}: {name!r} names GPU {device.index}; this machine has cuda:0..cuda:{count - 1}"
            )


def check_add_trials(count: int) -> None:
    """`--add-trials`: 0 (none) or 1 .. `MAX_ADD_TRIALS`."""
    if count and not 1 <= count <= MAX_ADD_TRIALS:
        raise ValueError(f"--add-trials: must be in 1..{MAX_ADD_TRIALS}, got {count}")
