"""Gradual pruning on one worker of a (possibly) data-parallel job, with no dependency on Ray.

The loop talks to the outside world only through a `Reporter` (metrics + checkpoint per epoch, the
latest checkpoint to resume from, rank and world size), so the same code runs inside Ray Train
workers, directly inside a Ray Tune function trial, and in plain tests (`LocalReporter`).

Per epoch e: prune first if a sparsity step falls on e (Fisher on the current masked weights; with
several workers each collects its share of the gradients and the sums are all-reduced, then rank 0
plans and broadcasts weights and masks), train one epoch (masks re-applied after every optimizer
step), evaluate top-1 on the whole validation and test splits, keep the checkpoint of the current
target's window that is best on validation (`val_top1`), report metrics (`top1` is always the held-out
test top-1) and a resumable checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Subset

from ovit_ray.models import save_checkpoint
from ovit_ray.pruning import (
    DEFAULT_PATTERNS,
    MaskSet,
    Pruner,
    PruneSettings,
    count_params_and_flops,
    parse_pattern,
    select_prunable,
)
from ovit_ray.training.kept import BEST_FOLDER, KeptFolder, local_folder
from ovit_ray.training.loop import evaluate, make_loader, train_one_epoch
from ovit_ray.training.schedules import build_lr_schedule
from ovit_ray.training.setup import build_model_and_data

STATE_FILE = "state.pt"


class CorruptCheckpointError(ValueError):
    """A checkpoint's resume state cannot be read (truncated upload, full disk, bit rot)."""


def verify_state(directory: str | os.PathLike) -> Path:
    """The checkpoint's state file, checked end to end (the CRC of every record of torch's zip
    format) without unpickling it, so a host can pick a readable checkpoint cheaply."""
    path = Path(directory) / STATE_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    if bad is not None:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC check")
    return path


class Reporter(Protocol):
    """What the loop needs from its host (Ray Train, Ray Tune, or nothing at all)."""

    world_rank: int
    world_size: int

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        """Called by every worker once per epoch; rank 0 passes the checkpoint directory. The files in
        its `best/` folder must end up in `kept_folder()` once the checkpoint is persisted."""

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        """The latest reported checkpoint as a local directory (None on a fresh start)."""

    def kept_folder(self) -> KeptFolder | None:
        """The run's persistent `best/` folder (rank 0, once a checkpoint was reported or resumed)."""


@dataclass(frozen=True)
class GradualSpec:
    """Everything a worker needs, as plain values (validated upstream by `orchestration.config`).

    steps: (epoch, sparsity) pruning steps, applied before training that epoch.
    windows: (target, first epoch, end epoch) fine-tune windows; the best epoch of each window is
    the checkpoint reported for that target. The run lasts until the last window ends.
    batch_size is global: each of W workers trains on batch_size // W samples per step.
    """

    steps: Sequence[tuple[int, float]]
    windows: Sequence[tuple[float, int, int]]
    model: str = "digits-vit"
    checkpoint: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    split_seed: int = 0
    patterns: Sequence[str] = DEFAULT_PATTERNS
    method: str = "ovit"
    block_size: int = 64
    num_grads: int = 64
    damp: float = 1e-7
    grad_batch_size: int = 16
    pattern: str | None = None
    scope: str = "global"
    lr_schedule: str = "cyclic_linear"
    lr_max: float = 5e-4
    lr_min: float = 1e-5
    warmup_epochs: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: str = "light"
    distill_weight: float = 0.0
    distill_temperature: float = 2.0
    seed: int = 0
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_steps_per_epoch: int | None = None  # caps an epoch (smoke tests, CI); None = the whole split

    @property
    def total_epochs(self) -> int:
        return max(end for _, _, end in self.windows)

    def prune_settings(self, world_rank: int, world_size: int) -> PruneSettings:
        """This worker's settings: its share of `num_grads`, so the total over workers is num_grads."""
        share = self.num_grads // world_size + (world_rank < self.num_grads % world_size)
        return PruneSettings(
            method=self.method,
            block_size=self.block_size,
            num_grads=max(1, share),
            damp=self.damp,
            grad_batch_size=self.grad_batch_size,
            scope=self.scope,
            pattern=None if self.pattern is None else parse_pattern(self.pattern),
        )


class LocalReporter:
    """Single-process host: checkpoints are copied under `root`, best files kept in `root/best`,
    metrics kept in `history`."""

    world_rank = 0
    world_size = 1

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is not None:
            target = self.root / f"checkpoint_{len(list(self.root.glob('checkpoint_*'))):06d}"
            shutil.copytree(checkpoint_dir, target)
            self.kept_folder().promote(str(target))

    @contextmanager
    def checkpoint_dir(self) -> Iterator[str | None]:
        found = sorted(self.root.glob("checkpoint_*"))
        yield str(found[-1]) if found else None

    def kept_folder(self) -> KeptFolder:
        return local_folder(self.root / BEST_FOLDER)


def _target_key(target: float) -> str:
    return f"{target:.4f}"


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Capped:
    """At most `cap` batches of `loader` per pass (the LR schedule sees the capped length)."""

    def __init__(self, loader: Iterable, cap: int | None):
        self.loader, self.cap = loader, cap

    def __len__(self) -> int:
        return len(self.loader) if self.cap is None else min(self.cap, len(self.loader))

    def __iter__(self) -> Iterator:
        return itertools.islice(self.loader, len(self))


class _Comm:
    """Collectives that degrade to no-ops in a single process; NCCL needs tensors on the GPU."""

    def __init__(self, rank: int, size: int, device: torch.device):
        self.rank, self.size = rank, size
        self.device = (
            device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")
        )

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def sum_tensor_(self, t: torch.Tensor) -> None:
        if self.size > 1:
            dist.all_reduce(t)

    def broadcast_(self, t: torch.Tensor) -> None:
        if self.size > 1:
            moved = t.to(self.device)
            dist.broadcast(moved, src=0)
            t.copy_(moved)

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


class GradualRun:
    """State of one worker's gradual-pruning run; `run()` drives it to the end."""

    def __init__(self, spec: GradualSpec, reporter: Reporter, *, device: str | None = None):
        self.began = time.perf_counter()
        self.spec, self.reporter = spec, reporter
        self.rank, self.world = reporter.world_rank, reporter.world_size
        use_cuda = spec.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device(device or ("cuda" if use_cuda else "cpu"))
        self.comm = _Comm(self.rank, self.world, self.device)
        torch.manual_seed(spec.seed)  # identical initial weights on every worker (random-init models)
        start = build_model_and_data(
            spec.model,
            checkpoint=spec.checkpoint,
            dataset=spec.dataset,
            data_root=spec.data_root,
            split_seed=spec.split_seed,
            augment=spec.augment,
            progress=False,
        )
        torch.manual_seed(spec.seed * 1000 + self.rank)  # different augmentation noise per worker
        self.model = start.model.to(self.device)
        self.data = start.data
        self.params = select_prunable(self.model, spec.patterns)
        self.masks = MaskSet(start.masks) if start.masks else MaskSet.dense(self.params)
        self.masks.apply(self.model)
        self.teacher = (
            copy.deepcopy(self.model).eval().requires_grad_(False) if spec.distill_weight > 0 else None
        )
        self._build_loaders()
        self.ddp: nn.Module = self.model
        if self.world > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if use_cuda else None
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=spec.lr_max, weight_decay=spec.weight_decay
        )
        spe = len(self.train_loader)
        total = spec.total_epochs * spe
        self.schedule = build_lr_schedule(
            spec.lr_schedule,
            max_lr=spec.lr_max,
            min_lr=spec.lr_min,
            total_steps=total,
            cycle_starts=[e * spe for e, _ in spec.steps if e * spe < total],
            warmup_steps=spec.warmup_epochs * spe,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
        self._mask_hook = self.masks.attach(self.optimizer, self.model)
        # resumable state
        self.epoch, self.steps_done = 0, 0
        self.best: dict[str, dict[str, Any]] = {}
        self.targets: list[dict[str, Any]] = []
        self._new_best: str | None = None  # the best file to write with this epoch's checkpoint
        self.worker_seconds_before, self.loop_seconds_before = 0.0, 0.0
        self.resumed_from: int | None = None
        self._resume()

    def _build_loaders(self) -> None:
        spec, data = self.spec, self.data
        self.train_sampler = DistributedSampler(
            data.train, self.world, self.rank, shuffle=True, seed=spec.seed
        )
        self.train_loader = _Capped(
            make_loader(
                data.train,
                max(1, spec.batch_size // self.world),
                shuffle=False,
                seed=spec.seed,
                sampler=self.train_sampler,
            ),
            spec.max_steps_per_epoch,
        )
        self.grad_sampler = DistributedSampler(
            data.train, self.world, self.rank, shuffle=True, seed=spec.seed + 1
        )
        self.grad_loader = make_loader(
            data.train, spec.grad_batch_size, shuffle=False, seed=spec.seed, sampler=self.grad_sampler
        )
        self.val_loader, self.test_loader = (  # exact partitions over workers, no padding
            make_loader(
                Subset(split, range(self.rank, len(split), self.world)),
                spec.eval_batch_size,
                shuffle=False,
                seed=spec.seed,
            )
            for split in (data.val, data.test)
        )

    # -- checkpoints --------------------------------------------------------------------------
    def _resume(self) -> None:
        with self.reporter.checkpoint_dir() as directory:
            if directory is None:
                return
            blob = torch.load(verify_state(directory), weights_only=True, map_location="cpu")
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self._set_masks(MaskSet(blob["masks"]).to(self.device))
        rng = blob["rng"]
        if rng.shape[0] == self.world:
            torch.set_rng_state(
                rng[self.rank].clone()
            )  # a row view would hand torch a foreign storage offset
        meta = json.loads(blob["meta"])
        self.epoch, self.steps_done = meta["epoch"], meta["steps_done"]
        self.best, self.targets = meta["best"], meta["targets"]
        self.worker_seconds_before, self.loop_seconds_before = meta["worker_seconds"], meta["loop_seconds"]
        self.resumed_from = self.epoch

    def _write_state(
        self, directory: Path, rng: torch.Tensor, worker_seconds: float, loop_seconds: float
    ) -> None:
        meta = {
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "best": self.best,
            "targets": self.targets,
            "worker_seconds": worker_seconds,
            "loop_seconds": loop_seconds,
        }
        torch.save(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "masks": self.masks.state_dict(),
                "rng": rng,
                "meta": json.dumps(meta),
            },
            directory / STATE_FILE,
        )

    def _set_masks(self, masks: MaskSet) -> None:
        self._mask_hook.remove()
        self.masks = masks
        self.masks.apply(self.model)
        self._mask_hook = self.masks.attach(self.optimizer, self.model)

    # -- pruning ------------------------------------------------------------------------------
    def prune(self, sparsity: float) -> None:
        """One pruning step; every worker leaves it with rank 0's weights and masks."""
        pruner = Pruner(self.model, self.params, self.masks, self.spec.prune_settings(self.rank, self.world))
        self.grad_sampler.set_epoch(self.epoch)
        pruner.collect(self.grad_loader)
        if pruner.fisher is not None and self.world > 1:
            for sums in pruner.fisher.sums.values():
                self.comm.sum_tensor_(sums)
            pruner.fisher.count = int(self.comm.sum([pruner.fisher.count])[0])
        masks = self.masks
        if self.rank == 0:
            pruner.plan()
            masks = pruner.apply(sparsity)
        del pruner
        if self.world > 1:
            with torch.no_grad():
                for tensor in self.model.state_dict().values():
                    self.comm.broadcast_(tensor)
            flags = {name: mask.to(self.device, torch.uint8) for name, mask in masks.items()}
            for flag in flags.values():
                self.comm.broadcast_(flag)
            masks = MaskSet(flags)
        self._set_masks(masks)
        self.steps_done += 1

    # -- epochs -------------------------------------------------------------------------------
    def _window(self, epoch: int) -> tuple[float, int, int] | None:
        return next((w for w in self.spec.windows if w[1] <= epoch < w[2]), None)

    def _worker_seconds(self) -> tuple[float, float]:
        """(sum over workers of wall seconds so far, rank 0's loop seconds so far), all attempts."""
        mine = time.perf_counter() - self.began
        total, rank0 = self.comm.sum([mine, mine if self.rank == 0 else 0.0])
        return self.worker_seconds_before + total, self.loop_seconds_before + rank0

    def _hours(self, worker_seconds: float) -> dict[str, float]:
        return {
            "cpu_hours": worker_seconds * self.spec.cpus_per_worker / 3600,
            "gpu_hours": worker_seconds * self.spec.gpus_per_worker / 3600,
        }

    def run_epoch(self) -> dict[str, Any]:
        spec, epoch = self.spec, self.epoch
        for step_epoch, sparsity in spec.steps[self.steps_done :]:
            if step_epoch != epoch:
                break
            self.prune(sparsity)
        lr = self.optimizer.param_groups[0]["lr"]
        self.train_sampler.set_epoch(epoch)
        stats = train_one_epoch(
            self.ddp,
            self.train_loader,
            self.optimizer,
            loss_fn=self.loss_fn,
            device=self.device,
            scheduler=self.scheduler,
            teacher=self.teacher,
            distill_weight=spec.distill_weight,
            distill_temperature=spec.distill_temperature,
        )
        val = evaluate(self.model, self.val_loader, device=self.device)
        test = evaluate(self.model, self.test_loader, device=self.device)
        n_val, n_test, n_train = len(self.val_loader.dataset), len(self.test_loader.dataset), stats["steps"]
        correct, val_loss, n, test_correct, nt, train_loss, m = self.comm.sum(
            [
                val["top1"] * n_val,
                val["loss"] * n_val,
                n_val,
                test["top1"] * n_test,
                n_test,
                stats["loss"] * n_train,
                n_train,
            ]
        )
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "top1": test_correct / nt,
            "val_top1": correct / n,
            "loss": val_loss / n,
            "train_loss": train_loss / m,
            "sparsity": self.masks.sparsity(),
            "lr": lr,
            "epochs_done": epoch + 1,
        }
        window = self._window(epoch)
        if window is not None:
            self._keep_best(window, metrics)
        self.epoch += 1
        worker_seconds, loop_seconds = self._worker_seconds()
        metrics.update(self._hours(worker_seconds))
        if window is not None and epoch == window[2] - 1:
            metrics.update(self._close_window(window, metrics))
        rng = torch.stack(self.comm.gather_objects(torch.get_rng_state()))
        if self.rank != 0:
            self.reporter.report(metrics, None)
            return metrics
        directory = Path(tempfile.mkdtemp(prefix="ovit-gradual-"))
        try:
            self._write_state(directory, rng, worker_seconds, loop_seconds)
            if self._new_best is not None:
                self._write_best(directory, window)
            self.reporter.report(metrics, str(directory))
            self._new_best = None
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return metrics

    def _keep_best(self, window: tuple[float, int, int], metrics: Mapping[str, Any]) -> None:
        """Remember a new best of the window; its file goes out with this epoch's checkpoint, and its
        FLOPs are counted here, from the model in memory (masks included)."""
        key = _target_key(window[0])
        if key in self.best and self.best[key]["val_top1"] >= metrics["val_top1"]:
            return
        size = (self.data.in_chans, self.data.image_size, self.data.image_size)
        counts = count_params_and_flops(self.model, self.masks, size)
        self._new_best = f"target_{key}_epoch{self.epoch:04d}.safetensors"
        self.best[key] = {
            "top1": metrics["top1"],
            "val_top1": metrics["val_top1"],
            "epoch": self.epoch,
            "sparsity": metrics["sparsity"],
            "checkpoint": self._new_best,
            "flops_dense": counts.flops_dense,
            "flops_nonzero": counts.flops_nonzero,
            "flops_reduction": counts.flops_reduction,
        }

    def _write_best(self, directory: Path, window: tuple[float, int, int]) -> None:
        best = self.best[_target_key(window[0])]
        meta = {
            "target": window[0],
            "epoch": best["epoch"],
            "top1": best["top1"],
            "val_top1": best["val_top1"],
            "sparsity": best["sparsity"],
            "model": self.spec.model,
            "dataset": self.spec.dataset,
            "method": self.spec.method,
            "split_seed": self.spec.split_seed,
            "num_classes": self.data.num_classes,
            "image_size": self.data.image_size,
        }
        save_checkpoint(
            directory / BEST_FOLDER / best["checkpoint"], self.model, self.masks.state_dict(), meta
        )

    def _close_window(self, window: tuple[float, int, int], metrics: Mapping[str, Any]) -> dict[str, float]:
        best = self.best[_target_key(window[0])]
        row = {
            "target_sparsity": window[0],
            "achieved_sparsity": best["sparsity"],
            "top1": best["top1"],
            "val_top1": best["val_top1"],
            "best_epoch": best["epoch"],
            "epochs": window[2],
            "checkpoint": best["checkpoint"],
            "cpu_hours": metrics["cpu_hours"],
            "gpu_hours": metrics["gpu_hours"],
            **{k: best.get(k) for k in ("flops_dense", "flops_nonzero", "flops_reduction")},
        }
        self.targets.append(row)
        prefix = f"target_{_target_key(window[0])}"
        return {
            f"{prefix}/top1": best["top1"],
            f"{prefix}/val_top1": best["val_top1"],
            f"{prefix}/sparsity": best["sparsity"],
            f"{prefix}/epochs": window[2],
            f"{prefix}/cpu_hours": metrics["cpu_hours"],
            f"{prefix}/gpu_hours": metrics["gpu_hours"],
        }

    def summary(self) -> dict[str, Any]:
        """What the run returns; identical on every rank except the digests, which are gathered, and
        the best checkpoints, which rank 0 names by their persistent location."""
        worker_seconds, loop_seconds = self._worker_seconds()
        masks = self.comm.gather_objects(_digest(self.masks.state_dict()))
        weights = self.comm.gather_objects(_digest(self.model.state_dict()))
        kept = self.reporter.kept_folder() if self.rank == 0 else None
        targets = [
            {**t, "checkpoint": kept.uri(t["checkpoint"]) if kept else t["checkpoint"]} for t in self.targets
        ]
        return {
            "targets": targets,
            "total_epochs": self.epoch,
            "final_sparsity": self.masks.sparsity(),
            "worker_seconds": worker_seconds,
            "loop_seconds": loop_seconds,
            **self._hours(worker_seconds),
            "world_size": self.world,
            "resumed_from_epoch": self.resumed_from,
            "mask_digests": masks,
            "weight_digests": weights,
        }

    def drop_stale_best(self) -> None:
        """Best-so-far files superseded within a window (named by epoch, so a crash never loses one)."""
        kept = self.reporter.kept_folder() if self.rank == 0 else None
        if kept is not None:
            kept.discard({b["checkpoint"] for b in self.best.values()}, [f"target_{k}_" for k in self.best])


def run_gradual(
    spec: GradualSpec,
    reporter: Reporter,
    *,
    device: str | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a gradual-pruning run to its last epoch; returns `GradualRun.summary()`.

    `epoch_hook(epoch, rank)` runs at the start of every epoch (fault injection in tests, progress).
    """
    run = GradualRun(spec, reporter, device=device)
    while run.epoch < spec.total_epochs:
        if epoch_hook is not None:
            epoch_hook(run.epoch, run.rank)
        run.run_epoch()
    run.drop_stale_best()
    return run.summary()
