"""The gradual loop of one worker (see the package docstring for its hosts and parts).

Per epoch e: prune first if a sparsity step falls on e, train one epoch (masks re-applied after every
optimizer step), evaluate top-1 on the whole validation and test splits, keep the checkpoint of the
current target's window that is best on validation, report metrics (`top1` is always the held-out test
top-1) and a resumable checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovit_ray.models import save_checkpoint
from ovit_ray.pruning import MaskSet, count_params_and_flops, select_prunable
from ovit_ray.training.gradual.bests import TargetBests
from ovit_ray.training.gradual.comm import Comm, digest
from ovit_ray.training.gradual.hosts import Reporter, load_state, save_state
from ovit_ray.training.gradual.prune_step import prune_step
from ovit_ray.training.gradual.worker_data import worker_loaders
from ovit_ray.training.kept import BEST_FOLDER
from ovit_ray.training.loop import evaluate, train_one_epoch
from ovit_ray.training.schedules import build_lr_schedule
from ovit_ray.training.setup import build_model_and_data, distillation_teacher
from ovit_ray.training.spec import RunSpec, Schedule, Window


class GradualRun:
    """State of one worker's gradual-pruning run; `run()` drives it to the end."""

    def __init__(self, spec: RunSpec, schedule: Schedule, reporter: Reporter, *, device: str | None = None):
        self.began = time.perf_counter()
        self.spec, self.plan, self.reporter = spec, schedule, reporter
        self.rank, self.world = reporter.world_rank, reporter.world_size
        use_cuda = spec.gpus_per_worker > 0 and torch.cuda.is_available()
        self.device = torch.device(device or ("cuda" if use_cuda else "cpu"))
        self.comm = Comm(self.rank, self.world, self.device)
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
        self.structure = start.structure
        self.params = select_prunable(self.model, spec.patterns)
        self.masks = MaskSet(start.masks) if start.masks else MaskSet.dense(self.params)
        self.masks.apply(self.model)
        self.teacher = (
            distillation_teacher(spec, self.model).to(self.device) if spec.distill_weight > 0 else None
        )
        self.loaders = worker_loaders(self.data, spec, self.rank, self.world)
        self.ddp: nn.Module = self.model
        if self.world > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if use_cuda else None
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=spec.lr_max, weight_decay=spec.weight_decay
        )
        spe = len(self.loaders.train)
        total = schedule.total_epochs * spe
        self.schedule = build_lr_schedule(
            spec.lr_schedule,
            max_lr=spec.lr_max,
            min_lr=spec.lr_min,
            total_steps=total,
            cycle_starts=[e * spe for e, _ in schedule.steps if e * spe < total],
            warmup_steps=spec.warmup_epochs * spe,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)
        self._mask_hook = self.masks.attach(self.optimizer, self.model)
        # resumable state
        self.epoch, self.steps_done = 0, 0
        self.bests = TargetBests()
        self.worker_seconds_before, self.loop_seconds_before = 0.0, 0.0
        self.resumed_from: int | None = None
        self._resume()

    # -- checkpoints --------------------------------------------------------------------------
    def _resume(self) -> None:
        with self.reporter.checkpoint_dir() as directory:
            if directory is None:
                return
            blob = load_state(directory)
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self._set_masks(MaskSet(blob["masks"]).to(self.device))
        rng = blob["rng"]
        if rng.shape[0] == self.world:
            torch.set_rng_state(
                rng[self.rank].clone()
            )  # a row view would hand torch a foreign storage offset
        meta = blob["meta"]
        self.epoch, self.steps_done = meta["epoch"], meta["steps_done"]
        self.bests = TargetBests(meta["best"], meta["targets"])
        self.worker_seconds_before, self.loop_seconds_before = meta["worker_seconds"], meta["loop_seconds"]
        self.resumed_from = self.epoch

    def _write_state(
        self, directory: Path, rng: torch.Tensor, worker_seconds: float, loop_seconds: float
    ) -> None:
        meta = {
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "best": self.bests.best,
            "targets": self.bests.rows,
            "worker_seconds": worker_seconds,
            "loop_seconds": loop_seconds,
        }
        state = {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "masks": self.masks,
        }
        save_state(directory, {k: v.state_dict() for k, v in state.items()}, rng, meta)

    def _set_masks(self, masks: MaskSet) -> None:
        self._mask_hook.remove()
        self.masks = masks
        self.masks.apply(self.model)
        self._mask_hook = self.masks.attach(self.optimizer, self.model)

    # -- pruning ------------------------------------------------------------------------------
    def prune(self, sparsity: float) -> None:
        """One pruning step; every worker leaves it with rank 0's weights and masks."""
        self.loaders.grad_sampler.set_epoch(self.epoch)
        settings = self.spec.prune_settings(self.rank, self.world)
        masks = prune_step(
            self.model, self.params, self.masks, settings, self.loaders.grad, sparsity, self.comm
        )
        self._set_masks(masks)
        self.steps_done += 1

    # -- epochs -------------------------------------------------------------------------------
    def _window(self, epoch: int) -> Window | None:
        return next((w for w in self.plan.windows if w[1] <= epoch < w[2]), None)

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
        for step_epoch, sparsity in self.plan.steps[self.steps_done :]:
            if step_epoch != epoch:
                break
            self.prune(sparsity)
        lr = self.optimizer.param_groups[0]["lr"]
        self.loaders.train_sampler.set_epoch(epoch)
        stats = train_one_epoch(
            self.ddp,
            self.loaders.train,
            self.optimizer,
            loss_fn=self.loss_fn,
            device=self.device,
            scheduler=self.scheduler,
            teacher=self.teacher,
            distill_weight=spec.distill_weight,
            distill_temperature=spec.distill_temperature,
        )
        val = evaluate(self.model, self.loaders.val, device=self.device)
        test = evaluate(self.model, self.loaders.test, device=self.device)
        n_val, n_test, n_train = self.loaders.val_count, self.loaders.test_count, stats["steps"]
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
            size = (self.data.in_chans, self.data.image_size, self.data.image_size)
            self.bests.offer(
                window, metrics, self.epoch, lambda: count_params_and_flops(self.model, self.masks, size)
            )
        self.epoch += 1
        worker_seconds, loop_seconds = self._worker_seconds()
        metrics.update(self._hours(worker_seconds))
        if window is not None and epoch == window[2] - 1:
            metrics.update(self.bests.close(window, metrics))
        rng = torch.stack(self.comm.gather_objects(torch.get_rng_state()))
        if self.rank != 0:
            self.reporter.report(metrics, None)
            return metrics
        directory = Path(tempfile.mkdtemp(prefix="ovit-gradual-"))
        try:
            self._write_state(directory, rng, worker_seconds, loop_seconds)
            if self.bests.pending is not None and window is not None:
                self._write_best(directory / BEST_FOLDER / self.bests.pending, window)
            self.reporter.report(metrics, str(directory))
            self.bests.pending = None
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return metrics

    def _write_best(self, path: Path, window: Window) -> None:
        meta = {
            **self.bests.file_meta(window),
            "model": self.spec.model,
            "dataset": self.spec.dataset,
            "method": self.spec.method,
            "split_seed": self.spec.split_seed,
            "num_classes": self.data.num_classes,
            "image_size": self.data.image_size,
        }
        if self.structure is not None:  # a structured model stays loadable: its shape goes with it
            meta["structure"] = self.structure
        save_checkpoint(path, self.model, self.masks.state_dict(), meta)

    def summary(self) -> dict[str, Any]:
        """What the run returns; identical on every rank except the digests, which are gathered, and
        the best checkpoints, which rank 0 names by their persistent location."""
        worker_seconds, loop_seconds = self._worker_seconds()
        masks = self.comm.gather_objects(digest(self.masks.state_dict()))
        weights = self.comm.gather_objects(digest(self.model.state_dict()))
        kept = self.reporter.kept_folder() if self.rank == 0 else None
        targets = [
            {**t, "checkpoint": kept.uri(t["checkpoint"]) if kept else t["checkpoint"]}
            for t in self.bests.rows
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
            kept.discard(*self.bests.current_files())


def run_gradual(
    spec: RunSpec,
    schedule: Schedule,
    reporter: Reporter,
    *,
    device: str | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a gradual-pruning run to its last epoch; returns `GradualRun.summary()`.

    `epoch_hook(epoch, rank)` runs at the start of every epoch (fault injection in tests, progress).
    """
    run = GradualRun(spec, schedule, reporter, device=device)
    while run.epoch < schedule.total_epochs:
        if epoch_hook is not None:
            epoch_hook(run.epoch, run.rank)
        run.run_epoch()
    run.drop_stale_best()
    return run.summary()
