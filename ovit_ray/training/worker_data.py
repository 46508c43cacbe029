"""One worker's data loaders in a data-parallel run: its shard of training batches (optionally capped),
its own gradient batches for the Fisher, and exact, unpadded partitions of validation and test."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ovit_ray.training.comm import Comm
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.spec import TrainSpec


class Capped:
    """At most `cap` batches of `loader` per pass (the LR schedule sees the capped length)."""

    def __init__(self, loader: Iterable[Any], cap: int | None):
        self.loader, self.cap = loader, cap

    def __len__(self) -> int:
        return len(self.loader) if self.cap is None else min(self.cap, len(self.loader))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self.loader, len(self))


@dataclass
class WorkerLoaders:
    train_sampler: DistributedSampler[Any]
    train: Capped
    grad_sampler: DistributedSampler[Any]
    grad: DataLoader[Any]
    val: DataLoader[Any]
    test: DataLoader[Any]
    val_count: int  # images in this worker's share of each split
    test_count: int


def worker_loaders(
    data: Any, spec: TrainSpec, rank: int, world: int, grad_batch_size: int = 1
) -> WorkerLoaders:
    """`data` holds the `train`, `val` and `test` splits; the global batch is split over `world` workers;
    `grad` draws the pruner's gradients, `grad_batch_size` images each."""
    train_sampler: DistributedSampler[Any] = DistributedSampler(
        data.train, world, rank, shuffle=True, seed=spec.seed
    )
    grad_sampler: DistributedSampler[Any] = DistributedSampler(
        data.train, world, rank, shuffle=True, seed=spec.seed + 1
    )
    val_share, test_share = (Subset(split, range(rank, len(split), world)) for split in (data.val, data.test))
    val, test = (
        make_loader(share, spec.eval_batch_size, shuffle=False, seed=spec.seed)
        for share in (val_share, test_share)
    )
    return WorkerLoaders(
        train_sampler=train_sampler,
        train=Capped(
            make_loader(
                data.train,
                max(1, spec.batch_size // world),
                shuffle=False,
                seed=spec.seed,
                sampler=train_sampler,
            ),
            spec.max_steps_per_epoch,
        ),
        grad_sampler=grad_sampler,
        grad=make_loader(data.train, grad_batch_size, shuffle=False, seed=spec.seed, sampler=grad_sampler),
        val=val,
        test=test,
        val_count=len(val_share),
        test_count=len(test_share),
    )


def shared_top1(
    model: nn.Module, loaders: WorkerLoaders, comm: Comm, device: torch.device
) -> tuple[float, float]:
    """(test top-1, val top-1) of the model over every worker's share of the two splits."""
    test = evaluate(model, loaders.test, device=device)["top1"]
    val = evaluate(model, loaders.val, device=device)["top1"]
    a, n, b, m = comm.sum(
        [test * loaders.test_count, loaders.test_count, val * loaders.val_count, loaders.val_count]
    )
    return a / n, b / m
