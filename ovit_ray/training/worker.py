"""One worker's part of a data-parallel training run, without Ray: what the gradual and the depth loops share.

Each worker builds the same model and its share of the data, keeps a clock across attempts (CPU/GPU-hours are
measured seconds x the resources it holds), and ends every epoch the same way: every worker's RNG state is
gathered, rank 0 writes a resumable checkpoint (the loop's state dicts and counters, plus a new best model
in its `best/` folder) into a temporary folder that the host (`hosts.Reporter`) persists, and all ranks
report. A subclass says what an epoch does (`run_epoch`), what its state is (`state`), and what it returns.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.training.comm import Comm
from ovit_ray.training.hosts import Reporter, load_state, save_state
from ovit_ray.training.kept import BEST_FOLDER
from ovit_ray.training.setup import job_start
from ovit_ray.training.spec import TrainSpec
from ovit_ray.training.worker_data import worker_loaders

# (file name under `best/`, a function writing the model there), for an epoch that found a new best
BestFile = tuple[str, Callable[[Path], None]]


class WorkerLoop(ABC):
    """A worker's place (rank, device, collectives), data, loss, clock and epoch counter."""

    def __init__(self, spec: TrainSpec, reporter: Reporter, *, device: str | None, grad_batch_size: int = 1):
        self.began = time.perf_counter()
        self.spec, self.reporter = spec, reporter
        self.rank, self.world = reporter.world_rank, reporter.world_size
        self.use_cuda = spec.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device(device or ("cuda" if self.use_cuda else "cpu"))
        self.comm = Comm(self.rank, self.world, self.device)
        torch.manual_seed(spec.seed)  # identical initial weights on every worker (random-init models)
        self.start = job_start(spec, augment=spec.augment)
        torch.manual_seed(spec.seed * 1000 + self.rank)  # different augmentation noise per worker
        self.data = self.start.data
        self.loaders = worker_loaders(self.data, spec, self.rank, self.world, grad_batch_size)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
        self.epoch = 0
        self.seconds_before = (0.0, 0.0)  # (all workers' seconds, rank 0's loop seconds) of earlier attempts
        self.resumed_from: int | None = None

    # -- resume -------------------------------------------------------------------------------
    def saved_state(self) -> dict[str, Any] | None:
        """The newest readable checkpoint of this run (its tensors and parsed `meta`), None on a fresh start."""
        with self.reporter.checkpoint_dir() as directory:
            return None if directory is None else load_state(directory)

    def resume_clock(self, blob: Mapping[str, Any]) -> None:
        """Epoch, clock and this worker's RNG from a saved state (same world size: else fresh RNG)."""
        meta = blob["meta"]
        self.epoch, self.resumed_from = meta["epoch"], meta["epoch"]
        self.seconds_before = (meta["worker_seconds"], meta["loop_seconds"])
        rng = blob["rng"]
        if rng.shape[0] == self.world:
            torch.set_rng_state(
                rng[self.rank].clone()
            )  # a row view would hand torch a foreign storage offset

    # -- clock --------------------------------------------------------------------------------
    def hours(self) -> dict[str, float]:
        """Seconds of all workers and of rank 0's loop so far (all attempts), and the CPU/GPU-hours they hold."""
        mine = time.perf_counter() - self.began
        total, rank0 = self.comm.sum([mine, mine if self.rank == 0 else 0.0])
        worker = self.seconds_before[0] + total
        return {
            "worker_seconds": worker,
            "loop_seconds": self.seconds_before[1] + rank0,
            "cpu_hours": worker * self.spec.cpus_per_worker / 3600,
            "gpu_hours": worker * self.spec.gpus_per_worker / 3600,
        }

    # -- the end of an epoch ------------------------------------------------------------------
    @abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state dicts to save, JSON counters beside them) of this loop."""

    def end_epoch(self, metrics: dict[str, Any], best: BestFile | None = None) -> dict[str, Any]:
        """Report the epoch (with a checkpoint from rank 0); `metrics` gains the hours spent so far."""
        hours = self.hours()
        metrics.update(cpu_hours=hours["cpu_hours"], gpu_hours=hours["gpu_hours"])
        rng = torch.stack(self.comm.gather_objects(torch.get_rng_state()))
        if self.rank != 0:
            self.reporter.report(metrics, None)
            return metrics
        directory = Path(tempfile.mkdtemp(prefix="ovit-epoch-"))
        try:
            tensors, counters = self.state()
            counters.update(
                epoch=self.epoch, worker_seconds=hours["worker_seconds"], loop_seconds=hours["loop_seconds"]
            )
            save_state(directory, tensors, rng, counters)
            if best is not None:
                best[1](directory / BEST_FOLDER / best[0])
            self.reporter.report(metrics, str(directory))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return metrics

    @abstractmethod
    def run_epoch(self) -> dict[str, Any]:
        """Train and evaluate one epoch, then `end_epoch`; the epoch's metrics."""

    def run(self, total_epochs: int, epoch_hook: Callable[[int, int], None] | None = None) -> None:
        """Epochs until `total_epochs`; `epoch_hook(epoch, rank)` first in each (fault injection in tests)."""
        while self.epoch < total_epochs:
            if epoch_hook is not None:
                epoch_hook(self.epoch, self.rank)
            self.run_epoch()
