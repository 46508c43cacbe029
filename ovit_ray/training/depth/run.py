"""The two-stage BoundaryDPT loop on one worker of a (possibly) data-parallel run, without Ray.

Hosted like the gradual run (`training.hosts.Reporter`: Ray Train, a Tune trial or `LocalReporter`) on the
shared worker base (`training.worker`): each epoch ends in a checkpoint with the model's `depth_structure`, so
a resume rebuilds the pruned model before loading it, restores optimizer, LR, annealing step and RNG, and goes
on at the next epoch. Edits are made as phases are entered (`stages`; plan and width masks are rank 0's). The
reported model is the best on validation among the epochs whose model is final (every edit made, a = 0),
kept merged in `best/`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovit_ray.pruning.depth import DepthPlan, annealed_activations, depth_structure, rebuild_depth
from ovit_ray.pruning.structured import shrink
from ovit_ray.training.comm import digest
from ovit_ray.training.depth import stages
from ovit_ray.training.depth.spec import DepthSpec
from ovit_ray.training.hosts import Reporter
from ovit_ray.training.loop import train_one_epoch
from ovit_ray.training.schedules import build_lr_schedule
from ovit_ray.training.worker import BestFile, WorkerLoop
from ovit_ray.training.worker_data import shared_top1

COUNTERS = ("entered", "anneal_step", "best", "notes")  # the loop's state beside the tensors and the epoch


class DepthRun(WorkerLoop):
    """State of one worker's depth-pruning run; `run_depth` drives it to the end."""

    spec: DepthSpec

    def __init__(self, spec: DepthSpec, reporter: Reporter, *, device: str | None = None):
        super().__init__(spec, reporter, device=device)
        self.dense = self.start.model.to(self.device).eval().requires_grad_(False)  # teacher and reference
        self.phases = spec.phase_starts()
        self.entered, self.anneal_step = 0, 0  # resumable state (COUNTERS)
        self.best: dict[str, Any] | None = None
        self.images = stages.calibration(self.data, spec.calib_size, spec.seed, self.device)
        blob = self.saved_state()
        if blob is None:
            self.model = copy.deepcopy(self.dense).requires_grad_(True)
            self._start()
        else:
            self._resume(blob)

    # -- start and resume ---------------------------------------------------------------------
    def _start(self) -> None:
        plan = None
        if self.rank == 0:
            s = self.spec
            plan = stages.depth_plan(self.dense, self.images, s.scorer, s.attention, s.activation, s.seed)
        self.plan: DepthPlan = self.comm.gather_objects(plan)[0]
        test, val = self._evaluate(stages.removed_at_once(self.dense, self.plan))
        self.notes: dict[str, Any] = {"top1_after_removal": test, "val_top1_after_removal": val}

    def _resume(self, blob: Mapping[str, Any]) -> None:
        meta = blob["meta"]
        self.model = rebuild_depth(self.dense, meta["structure"]).requires_grad_(True)
        self.model.load_state_dict(blob["model"])
        self.plan = DepthPlan(tuple(meta["plan"][0]), tuple(meta["plan"][1]))
        for name in COUNTERS:
            setattr(self, name, meta[name])
        self.resume_clock(blob)
        self._new_optimizer()
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        counters = {name: getattr(self, name) for name in COUNTERS}
        counters.update(structure=depth_structure(self.model))
        counters["plan"] = [list(self.plan.drop_attention), list(self.plan.linearise)]
        return {k: getattr(self, k).state_dict() for k in ("model", "optimizer", "scheduler")}, counters

    # -- phases -------------------------------------------------------------------------------
    def _phase(self) -> tuple[str, int, int]:
        return self.phases[min(self.entered, len(self.phases)) - 1]

    def _new_optimizer(self) -> None:
        """AdamW over the current model's parameters and the current phase's cosine (or other) LR schedule;
        rebuilt whenever an edit replaces parameters."""
        stages.freeze_unused(self.model)
        if isinstance(old := getattr(self, "ddp", None), DistributedDataParallel):
            old._remove_autograd_hooks()  # the old wrapper's reducer would still wait for its gradients
        self.ddp: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.use_cuda else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        s = self.spec
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trained, lr=s.lr_max, weight_decay=s.weight_decay)
        _, first, end = self._phase() if self.entered else self.phases[0]
        steps = max(1, (end - first) * len(self.loaders.train))
        schedule = build_lr_schedule(s.lr_schedule, max_lr=s.lr_max, min_lr=s.lr_min, total_steps=steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

    def _enter_due(self) -> None:
        """Make the edits of every phase that starts at or before this epoch and was not entered yet; merge
        the linearised MLPs once nothing is left to anneal or prune."""
        changed = False
        while self.entered < len(self.phases) and self.phases[self.entered][1] <= self.epoch:
            name, first, end = self.phases[self.entered]
            self.entered += 1
            changed = True
            if name == "attention":
                stages.enter_attention(self.model, self.plan)
            elif name == "activation":
                stages.enter_activation(self.model, self.plan, 1.0 if end > first else 0.0)
                self.anneal_step = 0
            else:
                masks = None
                if self.rank == 0:
                    masks = stages.width_masks(
                        self.model, self.images, self.spec.width_ratio or 1.0, self.spec.seed
                    )
                self.model = shrink(self.model, self.comm.gather_objects(masks)[0])
        if self.entered == len(self.phases) and stages.annealing_done(self.model):
            changed = self._merge() or changed
        if changed:
            self.model.to(self.device)
            self._new_optimizer()

    def _merge(self) -> bool:
        if not annealed_activations(self.model):
            return False
        before = self._evaluate(self.model)[0]
        stages.merge_linearised(self.model)
        self.notes["merge_check"] = {"top1_linearised": before, "top1_merged": self._evaluate(self.model)[0]}
        return True

    def _anneal(self) -> Callable[[], None] | None:
        name, first, end = self._phase()
        if name != "activation":
            return None
        steps = (end - first) * len(self.loaders.train)

        def step() -> None:
            self.anneal_step += 1
            stages.set_mix(self.model, self.anneal_step, steps)

        return step

    def final(self) -> bool:
        """Whether the model has its final function: every phase entered and every activation linear."""
        return self.entered == len(self.phases) and stages.annealing_done(self.model)

    # -- epochs -------------------------------------------------------------------------------
    def _evaluate(self, model: nn.Module) -> tuple[float, float]:
        return shared_top1(model, self.loaders, self.comm, self.device)

    def run_epoch(self) -> dict[str, Any]:
        self._enter_due()
        name = self._phase()[0]
        lr = self.optimizer.param_groups[0]["lr"]
        self.loaders.train_sampler.set_epoch(self.epoch)
        s = self.spec
        stats = train_one_epoch(
            self.ddp,
            self.loaders.train,
            self.optimizer,
            loss_fn=self.loss_fn,
            device=self.device,
            scheduler=self.scheduler,
            teacher=self.dense,
            distill_weight=s.distill_weight,
            distill_temperature=s.distill_temperature,
            on_step=self._anneal(),
        )
        self.epoch += 1
        if self.epoch == s.total_epochs:
            self._enter_due()  # phases of no epochs at the end, and the merge
        return self._close_epoch(name, lr, stats["loss"])

    def _close_epoch(self, phase: str, lr: float, train_loss: float) -> dict[str, Any]:
        test, val = self._evaluate(self.model)
        acts = annealed_activations(self.model)
        metrics: dict[str, Any] = {
            "epoch": self.epoch - 1,
            "phase": phase,
            "top1": test,
            "val_top1": val,
            "loss": train_loss,
            "lr": lr,
            "mix": acts[0].a if acts else 0.0,
            "sparsity": 1 - stages.param_count(self.model) / stages.param_count(self.dense),
            "epochs_done": self.epoch,
        }
        best: BestFile | None = None
        if self.final() and (self.best is None or val > self.best["val_top1"]):
            name = f"boundarydpt_epoch{self.epoch - 1:04d}.safetensors"
            self.best = {"top1": test, "val_top1": val, "epoch": self.epoch - 1, "checkpoint": name}
            best = (name, partial(self._save_best, best=dict(self.best)))
        return self.end_epoch(metrics, best)

    def _save_best(self, path: Path, best: dict[str, Any]) -> None:
        meta = {k: getattr(self.spec, k) for k in ("model", "dataset", "split_seed", "run_key")}
        meta.update(num_classes=self.data.num_classes, image_size=self.data.image_size, **best)
        stages.save_final(self.model, path, meta)

    def summary(self) -> dict[str, Any]:
        """What the run returns; rank 0 names the best checkpoint by its persistent location."""
        weights = self.comm.gather_objects(digest(self.model.state_dict()))
        kept = self.reporter.kept_folder() if self.rank == 0 else None
        best = dict(self.best or {})
        if kept is not None and best:
            kept.discard({best["checkpoint"]}, ["boundarydpt_epoch"])  # superseded best-so-far files
            best["checkpoint"] = kept.uri(best["checkpoint"])
        return {
            "best": best,
            "plan": [list(self.plan.drop_attention), list(self.plan.linearise)],
            "structure": depth_structure(self.model),
            "notes": self.notes,
            "total_epochs": self.epoch,
            "phases": self.phases,
            **self.hours(),
            "world_size": self.world,
            "resumed_from_epoch": self.resumed_from,
            "weight_digests": weights,
        }


def run_depth(
    spec: DepthSpec,
    reporter: Reporter,
    *,
    device: str | None = None,
    epoch_hook: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a BoundaryDPT run to its last epoch; returns `DepthRun.summary()`.
    `epoch_hook(epoch, rank)` runs at the start of every epoch (fault injection in tests)."""
    run = DepthRun(spec, reporter, device=device)
    run.run(spec.total_epochs, epoch_hook)
    return run.summary()


def train_loop(config: Mapping[str, Any], reporter: Reporter) -> dict[str, Any]:
    """The loop as a kind hands it to its host: `config` holds the `spec`."""
    return run_depth(config["spec"], reporter, epoch_hook=config.get("epoch_hook"))
