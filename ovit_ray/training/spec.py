"""The typed spec of one gradual-pruning run: every knob, its bounds and choices, in one place.

YAML (`ovit-ray train CONFIG`), `ovit-ray train` flags (one per field) and sweep knobs all become a
`RunSpec` (in orchestration: `specs.run.GradualConfig`, which adds where results go); the validated object
is then handed unchanged to the Tune trial and to every Ray Train worker. A knob changes form twice on
its way to the pruner: YAML/flag value -> `RunSpec` field -> `PruneSettings` (the pruner's own values).

A run's `Schedule` (pruning steps and fine-tune windows) is derived from the spec, or, for the
independent-runs strategy, chosen by the orchestration; it is checked here either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from ovit_ray.pruning.methods import method_names
from ovit_ray.pruning.names import DEFAULT_PATTERNS, parse_pattern
from ovit_ray.training.schedules import sparsity_steps, sparsity_steps_through_targets

if TYPE_CHECKING:  # torch-backed: imported where used, so validation of flags stays light
    from ovit_ray.pruning import PruneSettings

Step = tuple[int, float]
Window = tuple[float, int, int]
# Upper bounds: a typo such as `end_epoch: 10000000000` must be a clear error, not a schedule of
# billions of entries that exhausts memory.
MAX_EPOCHS = 100_000
MAX_COUNT = 1_000_000  # block size, gradients, batch sizes, steps
MAX_SEED = 2**32 - 1
MAX_WORKERS = 4096


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


def _registered_method(name: str) -> str:
    if name not in method_names():
        raise ValueError(f"must be one of {', '.join(method_names())}")
    return name


def _pattern_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 2:4 as 2 * 60 + 4
        raise ValueError("quote it, e.g. '2:4' (YAML reads an unquoted N:M as a base-60 number)")
    return value


# Checks that belong to a field's type (so a sweep's partial `train` section applies them too).
# A pruning method's name, checked against the registry when validated (plug-ins registered later count).
MethodName = Annotated[str, AfterValidator(_registered_method)]
PatternText = Annotated[str, BeforeValidator(_pattern_text)]


class RunSpec(BaseModel):
    """One gradual-pruning run. Without `targets` it prunes init -> final sparsity on the grid
    start_epoch, +update_frequency, ..., end_epoch and then fine-tunes `window_epochs`; with `targets`
    it is a sparsity sweep: `steps_per_target` pruning steps to each target, then a window at each.
    `batch_size` is global: each of W workers trains on batch_size // W samples per step."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # model and data
    model: str = "digits-vit"
    checkpoint: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    # pruning (B, m, lambda, ...)
    method: MethodName = "ovit"
    block_size: int = Field(64, gt=0, le=MAX_COUNT)
    num_grads: int = Field(64, gt=0, le=MAX_COUNT)
    damp: float = Field(1e-7, gt=0, allow_inf_nan=False)
    grad_batch_size: int = Field(16, gt=0, le=MAX_COUNT)
    pattern: PatternText | None = None
    scope: Literal["global", "uniform"] = "global"
    patterns: tuple[str, ...] = Field(DEFAULT_PATTERNS, min_length=1, max_length=1000)
    dtype: Literal["float32", "float64"] = "float32"
    fisher_dtype: Literal["float32", "float64"] = "float64"
    # sparsity schedule
    init_sparsity: float = Field(0.0, ge=0, lt=1)
    final_sparsity: float = Field(0.75, ge=0, lt=1)
    start_epoch: int = Field(0, ge=0, le=MAX_EPOCHS)
    end_epoch: int = Field(2, ge=0, le=MAX_EPOCHS)
    update_frequency: int = Field(1, gt=0, le=MAX_EPOCHS)
    interpolation: Literal["linear", "cubic"] = "linear"
    targets: list[Annotated[float, Field(ge=0, lt=1)]] | None = Field(None, max_length=100)
    window_epochs: int = Field(2, gt=0, le=MAX_EPOCHS)
    steps_per_target: int = Field(1, gt=0, le=1000)
    # optimisation
    lr_schedule: Literal["cyclic_linear", "cosine", "constant"] = "cyclic_linear"
    lr_max: float = Field(5e-4, gt=0, allow_inf_nan=False)  # the reference recipe: 5e-4 -> 1e-5 per cycle
    lr_min: float = Field(1e-5, ge=0, allow_inf_nan=False)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)
    batch_size: int = Field(64, gt=0, le=MAX_COUNT)
    eval_batch_size: int = Field(256, gt=0, le=MAX_COUNT)
    max_steps_per_epoch: int | None = Field(None, gt=0, le=MAX_COUNT)  # caps an epoch (smoke tests, CI)
    weight_decay: float = Field(0.05, ge=0, allow_inf_nan=False)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: Literal["none", "light", "deit"] = "light"
    distill_weight: float = Field(0.0, ge=0, le=1)
    distill_temperature: float = Field(2.0, gt=0, allow_inf_nan=False)
    # The teacher: "start" (the starting weights, frozen), "model" (`model`'s own dense weights, e.g. the trained
    # preset, when training a pruned or shrunk `checkpoint`), or a checkpoint path.
    distill_teacher: str = Field("start", min_length=1, max_length=4096)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # resources: what each worker holds (GPU-hours are measured seconds x these)
    workers: int = Field(1, gt=0, le=MAX_WORKERS)
    cpus_per_worker: float = Field(1.0, gt=0, le=4096)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        settings = self.prune_settings()  # the pruner's own checks (pattern vs block size, ...)
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min: must be <= lr_max={self.lr_max}, got {self.lr_min}")
        schedule = self.schedule()
        if self.warmup_epochs >= schedule.total_epochs:
            raise ValueError(
                f"warmup_epochs: must be below the run's {schedule.total_epochs} epochs, got {self.warmup_epochs}"
            )
        implied = settings.pattern_sparsity
        if implied is not None and any(abs(s - implied) > 1e-9 for _, s in schedule.steps):
            raise ValueError(
                f"pattern: {self.pattern} implies sparsity {implied}; every pruning step must use it, "
                f"got {sorted({s for _, s in schedule.steps})}"
            )
        return self

    def prune_settings(self, world_rank: int = 0, world_size: int = 1) -> PruneSettings:
        """The pruner's settings for one worker: its share of `num_grads` (the total over workers is
        num_grads). Built on the driver too, so the pruner's own checks run before any worker starts."""
        from ovit_ray.pruning import PruneSettings

        share = self.num_grads // world_size + (world_rank < self.num_grads % world_size)
        return PruneSettings(
            method=self.method,
            block_size=self.block_size,
            num_grads=max(1, share),
            damp=self.damp,
            grad_batch_size=self.grad_batch_size,
            scope=self.scope,
            pattern=None if self.pattern is None else parse_pattern(self.pattern),
            dtype=self.dtype,
            fisher_dtype=self.fisher_dtype,
        )

    @property
    def strategy(self) -> str:
        return "sweep" if self.targets else "single"

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
