"""The gradual loop of one worker (see the package docstring for its hosts and parts).

Per epoch e: prune first if a sparsity step falls on e, train one epoch (masks re-applied after every
optimizer step), evaluate top-1 on the whole validation and test splits, keep the checkpoint of the
current target's window that is best on validation, report metrics (`top1` is always the held-out test
top-1) and a resumable checkpoint; the epoch that closes a window also reports that target's result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ovit_ray.models import save_checkpoint
from ovit_ray.pruning import MaskSet, count_params_and_flops, select_prunable
from ovit_ray.training.comm import digest
from ovit_ray.training.gradual.bests import TargetBests
from ovit_ray.training.gradual.prune_step import prune_step
from ovit_ray.training.hosts import Reporter
from ovit_ray.training.loop import evaluate, train_one_epoch
from ovit_ray.training.schedules import build_lr_schedule
from ovit_ray.training.setup import distillation_teacher
from ovit_ray.training.spec import RunSpec, Schedule, Window
from ovit_ray.training.worker import WorkerLoop


class GradualRun(WorkerLoop):
    """State of one worker's gradual-pruning run; `run()` drives it to the end."""

    spec: RunSpec

    def __init__(self, spec: RunSpec, schedule: Schedule, reporter: Reporter, *, device: str | None = None):
        super().__init__(spec, reporter, device=device, grad_batch_size=spec.grad_batch_size)
        self.plan = schedule
        self.model = self.start.model.to(self.device)
        self.structure = self.start.structure
        self.params = select_prunable(self.model, spec.patterns)
        self.masks = MaskSet(self.start.masks) if self.start.masks else MaskSet.dense(self.params)
        self.masks.apply(self.model)
        self.teacher = (
            distillation_teacher(spec, self.model).to(self.device) if spec.distill_weight > 0 else None
        )
        self.ddp: torch.nn.Module = self.model
        if self.world > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.use_cuda else None
            )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=spec.lr_max, weight_decay=spec.weight_decay
        )
        spe = len(self.loaders.train)
        total = schedule.total_epochs * spe
        lr = build_lr_schedule(
            spec.lr_schedule,
            max_lr=spec.lr_max,
            min_lr=spec.lr_min,
            total_steps=total,
            cycle_starts=[e * spe for e, _ in schedule.steps if e * spe < total],
            warmup_steps=spec.warmup_epochs * spe,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr)
        self._mask_hook = self.masks.attach(self.optimizer, self.model)
        self.steps_done = 0
        self.bests = TargetBests()
        if (blob := self.saved_state()) is not None:
            self._resume(blob)

    # -- checkpoints --------------------------------------------------------------------------
    def _resume(self, blob: Mapping[str, Any]) -> None:
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        self._set_masks(MaskSet(blob["masks"]).to(self.device))
        self.resume_clock(blob)
        meta = blob["meta"]
        self.steps_done = meta["steps_done"]
        self.bests = TargetBests(meta["best"], meta["targets"])

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors = {k: getattr(self, k).state_dict() for k in ("model", "optimizer", "scheduler", "masks")}
        return tensors, {"steps_done": self.steps_done, "best": self.bests.best, "targets": self.bests.rows}

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
                window, metrics, epoch, lambda: count_params_and_flops(self.model, self.masks, size)
            )
        self.epoch += 1
        best = None
        if self.bests.pending is not None and window is not None:
            best = (self.bests.pending, partial(self._write_best, window=window))
        self.bests.pending = None
        if window is not None and epoch == window[2] - 1:
            hours = self.hours()  # the result's hours: what the run spent up to this target
            metrics["target"] = self.bests.close(window, hours).payload()
        return self.end_epoch(metrics, best)

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
            **self.hours(),
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
    run.run(schedule.total_epochs, epoch_hook)
    run.drop_stale_best()
    return run.summary()


def train_loop(config: Mapping[str, Any], reporter: Reporter) -> dict[str, Any]:
    """The loop as a kind hands it to its host: `config` holds the `spec` and the `schedule`."""
    return run_gradual(config["spec"], config["schedule"], reporter, epoch_hook=config.get("epoch_hook"))
