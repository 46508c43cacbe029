"""The typed specs of training runs: every knob declared once (`ovit_ray.knobs`), grouped by what reads it.

`TrainSpec` (model and data, optimisation, resources) is what any training loop needs; `RunSpec` adds the
pruner's knobs (`PruneSettings`, declared in the pruning layer) and the sparsity schedule of one gradual run;
`training.depth.DepthSpec` adds BoundaryDPT's depth plan. A sweep file, `ovit-ray train` flags and search
spaces all become one of these; the validated object is handed unchanged to the Tune trial and to every Ray
Train worker. A knob changes form once on its way to the pruner: spec field -> a worker's `PruneSettings`.

A run's `Schedule` (pruning steps and fine-tune windows) is derived from the spec, or, for the
independent-runs strategy, chosen by the orchestration; it is checked here either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ovit_ray.knobs import Knobs, knob
from ovit_ray.pruning.settings import MAX_COUNT, PruneSettings
from ovit_ray.training.schedules import sparsity_steps, sparsity_steps_through_targets

Step = tuple[int, float]
Window = tuple[float, int, int]
# Upper bounds: a typo such as `end_epoch: 10000000000` must be a clear error, not a schedule of
# billions of entries that exhausts memory.
MAX_EPOCHS = 100_000
MAX_SEED = 2**32 - 1
MAX_WORKERS = 4096
Sparsity = Annotated[float, Field(ge=0, lt=1)]


@dataclass(frozen=True)
class Schedule:
    """steps: (epoch, sparsity) pruning steps, applied before training that epoch, in epoch order.
    windows: (target, first epoch, end epoch) fine-tune windows; the best epoch of each window on
    validation is the checkpoint reported for that target. The run lasts until the last window ends."""

    steps: tuple[Step, ...]
    windows: tuple[Window, ...]

    def __post_init__(self) -> None:
        epochs = [e for e, _ in self.steps]
        if epochs != sorted(epochs):
            raise ValueError(f"steps: pruning epochs must be in order, got {epochs}")
        if not self.windows:
            raise ValueError("windows: a run needs at least one fine-tune window")
        for target, start, end in self.windows:
            if not 0 <= start < end:
                raise ValueError(f"windows: need 0 <= start < end, got ({target}, {start}, {end})")

    @classmethod
    def of(cls, steps: Sequence[Sequence[Any]], windows: Sequence[Sequence[Any]]) -> Schedule:
        return cls(
            tuple((int(e), float(s)) for e, s in steps),
            tuple((float(t), int(a), int(b)) for t, a, b in windows),
        )

    @property
    def total_epochs(self) -> int:
        return max(end for _, _, end in self.windows)


class DataKnobs(Knobs):
    """Which model and data a job starts from, and its seed."""

    model: str = knob("digits-vit", "preset (digits-vit) or timm model name")
    checkpoint: str | None = knob(None, "starting weights, .safetensors or .pt")
    dataset: str | None = knob(None, "digits, lfw, imagefolder or cifar10 (default: the preset's)")
    data_root: str | None = knob(None, "directory of an imagefolder or cifar10 dataset")
    split_seed: int = knob(0, "seed of the fixed train/val/test split", label="split", ge=0, le=MAX_SEED)
    seed: int = knob(0, "seed of initialisation, sampling and pruning", ge=0, le=MAX_SEED)


class ResourceKnobs(Knobs):
    """What each worker holds (CPU- and GPU-hours are measured seconds x these)."""

    workers: int = knob(1, "Ray Train workers (DDP)", gt=0, le=MAX_WORKERS)
    cpus_per_worker: float = knob(1.0, "CPUs each worker holds", gt=0, le=4096)
    gpus_per_worker: float = knob(0.0, "GPUs each worker holds (0: CPU only)", ge=0, le=64)


class TrainSpec(DataKnobs, ResourceKnobs):
    """Model, data, optimisation and resources: what every training loop reads.
    `batch_size` is global: each of W workers trains on batch_size // W samples per step."""

    lr_schedule: Literal["cyclic_linear", "cosine", "constant"] = knob(
        "cyclic_linear", "cyclic_linear restarts at lr_max after every pruning step", label="sched"
    )
    lr_max: float = knob(
        5e-4, "peak learning rate", label="lr", log=True, gt=0
    )  # the reference: 5e-4 -> 1e-5
    lr_min: float = knob(1e-5, "lowest learning rate, <= lr_max", log=True, ge=0)
    warmup_epochs: int = knob(0, "linear warmup epochs", label="warm", ge=0, le=MAX_EPOCHS)
    batch_size: int = knob(
        64, "global training batch size (split over the workers)", label="bs", gt=0, le=MAX_COUNT
    )
    eval_batch_size: int = knob(256, "evaluation batch size per worker", gt=0, le=MAX_COUNT)
    max_steps_per_epoch: int | None = knob(
        None, "cap on optimizer steps per epoch (default: the whole train split)", gt=0, le=MAX_COUNT
    )
    weight_decay: float = knob(0.05, "AdamW weight decay", label="wd", ge=0)
    label_smoothing: float = knob(0.1, "label smoothing of the loss", label="ls", ge=0, lt=1)
    augment: Literal["none", "light", "deit"] = knob("light", "training augmentation", label="aug")
    distill_weight: float = knob(
        0.0, "weight of distillation from the dense model (0: off)", label="kd", ge=0, le=1
    )
    distill_temperature: float = knob(2.0, "distillation temperature", label="kdT", gt=0)
    distill_teacher: str = knob(
        "start",
        "teacher: start (the starting weights), model (the model's dense weights, e.g. the trained preset, "
        "for a pruned or shrunk checkpoint) or a checkpoint path",
        label="teacher",
        min_length=1,
        max_length=4096,
    )

    def unused(self) -> set[str]:
        unused = set()
        if self.lr_schedule == "constant":
            unused.add("lr_min")
        if self.distill_weight == 0:
            unused |= {"distill_temperature", "distill_teacher"}
        return unused

    @model_validator(mode="after")
    def _lr_order(self) -> TrainSpec:
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min: must be <= lr_max={self.lr_max}, got {self.lr_min}")
        return self


class RunSpec(TrainSpec, PruneSettings):
    """One gradual-pruning run. Without `targets` it prunes init -> final sparsity on the grid
    start_epoch, +update_frequency, ..., end_epoch and then fine-tunes `window_epochs`; with `targets`
    it is a sparsity sweep: `steps_per_target` pruning steps to each target, then a window at each."""

    # None: the attention and MLP weights of every transformer block, found in the model (any timm family)
    patterns: tuple[str, ...] | None = knob(
        None,
        "regular expressions of the weight names to prune (default: every attention and MLP projection)",
        min_length=1,
        max_length=1000,
    )
    init_sparsity: float = knob(0.0, "sparsity of the first pruning step's start", label="s0", ge=0, lt=1)
    final_sparsity: float = knob(0.75, "last sparsity, without targets", ge=0, lt=1)
    start_epoch: int = knob(0, "epoch of the first pruning step", ge=0, le=MAX_EPOCHS)
    end_epoch: int = knob(2, "epoch of the last pruning step, without targets", ge=0, le=MAX_EPOCHS)
    update_frequency: int = knob(1, "epochs between pruning steps", label="freq", gt=0, le=MAX_EPOCHS)
    interpolation: Literal["linear", "cubic"] = knob(
        "linear", "how sparsity rises between steps", label="interp"
    )
    targets: list[Sparsity] | None = knob(
        None,
        "target sparsities, each in [0, 1): a sparsity sweep with a fine-tune window at each",
        min_length=1,  # none: leave it unset (an empty list is a mistake, not a single run)
        max_length=100,
    )
    window_epochs: int = knob(
        2, "fine-tune epochs at each target (the best epoch is kept)", label="win", gt=0, le=MAX_EPOCHS
    )
    steps_per_target: int = knob(1, "pruning steps to reach each target", label="steps", gt=0, le=1000)

    def unused(self) -> set[str]:
        schedule = {"final_sparsity", "end_epoch"} if self.targets else {"steps_per_target"}
        return TrainSpec.unused(self) | PruneSettings.unused(self) | schedule

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        schedule = self.schedule()
        if self.warmup_epochs >= schedule.total_epochs:
            raise ValueError(
                f"warmup_epochs: must be below the run's {schedule.total_epochs} epochs, got {self.warmup_epochs}"
            )
        implied = self.pattern_sparsity
        if implied is not None and any(abs(s - implied) > 1e-9 for _, s in schedule.steps):
            raise ValueError(
                f"pattern: {self.pattern} implies sparsity {implied}; every pruning step must use it, "
                f"got {sorted({s for _, s in schedule.steps})}"
            )
        return self

    def prune_settings(self, world_rank: int = 0, world_size: int = 1) -> PruneSettings:
        """The pruner's settings for one worker: its share of `num_grads` (the total over workers is
        num_grads). The values were validated with this spec; only the share is new."""
        share = self.num_grads // world_size + (world_rank < self.num_grads % world_size)
        fields = {name: getattr(self, name) for name in PruneSettings.model_fields}
        return PruneSettings.model_construct(**{**fields, "num_grads": max(1, share)})

    def schedule(self) -> Schedule:
        """Pruning steps and fine-tune windows of this run. Steps to sparsity 0 are dropped: pruning a
        dense model to nothing would only cost a Fisher."""
        if self.targets:
            sweep = sparsity_steps_through_targets(
                self.targets,
                window_epochs=self.window_epochs,
                start_epoch=self.start_epoch,
                init=self.init_sparsity,
                steps_per_target=self.steps_per_target,
                update_frequency=self.update_frequency,
                interpolation=self.interpolation,
            )
            steps, windows = sweep.steps, [(w.sparsity, w.start, w.end) for w in sweep.windows]
        else:
            steps = sparsity_steps(
                self.init_sparsity,
                self.final_sparsity,
                self.start_epoch,
                self.end_epoch,
                self.update_frequency,
                self.interpolation,
            )
            windows = [(self.final_sparsity, self.end_epoch, self.end_epoch + self.window_epochs)]
        return Schedule.of([(e, s) for e, s in steps if s > 0], windows)

    def independent_schedule(self, index: int) -> Schedule:
        """The independent run for `targets[index]`: the sweep's epoch budget and pruning epochs up to that
        target, but every step heads straight for it (init -> target, interpolated), then the same window."""
        schedule = self.schedule()
        target, start, end = schedule.windows[index]
        epochs = [e for e, _ in schedule.steps if e <= start]
        ramp = sparsity_steps_through_targets(
            [target],
            window_epochs=1,
            init=self.init_sparsity,
            steps_per_target=len(epochs),
            interpolation=self.interpolation,
        )
        return Schedule.of(
            [(e, s) for e, (_, s) in zip(epochs, ramp.steps, strict=True)], [(target, start, end)]
        )
