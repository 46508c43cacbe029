"""Validated configuration of a gradual-pruning run (pydantic v2), loaded from YAML and/or flags.

Validation happens once, on the driver; workers get a plain `GradualSpec`. Errors come out as one
line naming each bad field and the value it got.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping, short_repr
from ovit_ray.pruning.methods import method_names
from ovit_ray.pruning.names import parse_pattern
from ovit_ray.training.schedules import sparsity_steps, sparsity_steps_through_targets

if TYPE_CHECKING:  # torch-backed: imported where used, so `ovit-ray train --help` stays fast
    from ovit_ray.pruning import PruneSettings
    from ovit_ray.training.gradual import GradualSpec

Steps = list[tuple[int, float]]
Windows = list[tuple[float, int, int]]
# Upper bounds: a typo such as `end_epoch: 10000000000` must be a clear error, not a schedule of
# billions of entries that exhausts memory.
MAX_EPOCHS = 100_000
MAX_COUNT = 1_000_000  # block size, gradients, batch sizes, steps
MAX_SEED = 2**32 - 1
MAX_WORKERS = 4096
# Fields that say where results go, not what is computed: they do not enter the run key.
PLACEMENT_FIELDS = {"out", "mlflow_uri", "experiment", "ray_address", "max_failures"}


def _registered_method(name: str) -> str:
    if name not in method_names():
        raise ValueError(f"must be one of {', '.join(method_names())}")
    return name


# A pruning method's name, checked against the registry when validated (plug-ins registered later count).
MethodName = Annotated[str, AfterValidator(_registered_method)]


class GradualConfig(BaseModel):
    """One gradual-pruning run. Without `targets` it prunes init -> final sparsity on the grid
    start_epoch, +update_frequency, ..., end_epoch and then fine-tunes `window_epochs`; with `targets`
    it is a sparsity sweep: `steps_per_target` pruning steps to each target, then a window at each."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # model and data
    model: str = "digits-vit"
    checkpoint: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    # pruner (B, m, lambda, ...)
    method: MethodName = "ovit"
    block_size: int = Field(64, gt=0, le=MAX_COUNT)
    num_grads: int = Field(64, gt=0, le=MAX_COUNT)
    damp: float = Field(1e-7, gt=0, allow_inf_nan=False)
    grad_batch_size: int = Field(16, gt=0, le=MAX_COUNT)
    pattern: str | None = None
    scope: Literal["global", "uniform"] = "global"
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
    max_steps_per_epoch: int | None = Field(None, gt=0, le=MAX_COUNT)
    weight_decay: float = Field(0.05, ge=0, allow_inf_nan=False)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: Literal["none", "light", "deit"] = "light"
    distill_weight: float = Field(0.0, ge=0, le=1)
    distill_temperature: float = Field(2.0, gt=0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # resources and placement
    workers: int = Field(1, gt=0, le=MAX_WORKERS)
    cpus_per_worker: float = Field(1.0, gt=0, le=4096)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)
    max_failures: int = Field(2, ge=0, le=1000)
    out: str = "runs/gradual"
    mlflow_uri: str | None = None
    experiment: str = "ovit-ray-gradual"
    ray_address: str | None = None

    @field_validator("pattern", mode="before")
    @classmethod
    def _pattern_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 2:4 as 2 * 60 + 4
            raise ValueError("quote it, e.g. '2:4' (YAML reads an unquoted N:M as a base-60 number)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GradualConfig:
        self.prune_settings()
        if self.lr_min > self.lr_max:
            raise ValueError(f"lr_min: must be <= lr_max={self.lr_max}, got {self.lr_min}")
        steps, windows = self.schedule()
        if self.warmup_epochs >= windows[-1][2]:
            raise ValueError(
                f"warmup_epochs: must be below the run's {windows[-1][2]} epochs, got {self.warmup_epochs}"
            )
        implied = self.prune_settings().pattern_sparsity
        if implied is not None and any(abs(s - implied) > 1e-9 for _, s in steps):
            raise ValueError(
                f"pattern: {self.pattern} implies sparsity {implied}; every pruning step must use it, "
                f"got {sorted({s for _, s in steps})}"
            )
        return self

    def prune_settings(self) -> PruneSettings:
        """The pruner's own validation (method, B, m, lambda, pattern) on the driver, before any worker starts."""
        from ovit_ray.pruning import PruneSettings

        return PruneSettings(
            method=self.method,
            block_size=self.block_size,
            num_grads=self.num_grads,
            damp=self.damp,
            grad_batch_size=self.grad_batch_size,
            scope=self.scope,
            pattern=None if self.pattern is None else parse_pattern(self.pattern),
        )

    def used_values(self) -> dict[str, Any]:
        """What this run computes with: fields that are set and that its settings read (MLflow params).

        Left out: placement, None, the single-run schedule under `targets` (and the reverse), lr_min of a
        constant schedule, the distillation temperature without distillation, the Fisher knobs of magnitude.
        """
        unused = set(PLACEMENT_FIELDS)
        unused |= {"final_sparsity", "end_epoch"} if self.targets else {"steps_per_target"}
        if self.lr_schedule == "constant":
            unused.add("lr_min")
        if self.distill_weight == 0:
            unused.add("distill_temperature")
        if not self.prune_settings().uses_fisher:
            unused |= {"num_grads", "damp", "grad_batch_size"}
        return {k: v for k, v in self.model_dump(exclude=unused).items() if v is not None}

    @property
    def strategy(self) -> str:
        return "sweep" if self.targets else "single"

    def schedule(self) -> tuple[Steps, Windows]:
        """Pruning steps (epoch, sparsity) and fine-tune windows (target, start, end) of this run.

        Steps to sparsity 0 are dropped: pruning a dense model to nothing would only cost a Fisher.
        """
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
        return [(e, s) for e, s in steps if s > 0], windows

    def independent_schedule(self, index: int) -> tuple[Steps, Windows]:
        """The independent run for `targets[index]`: the sweep's epoch budget and pruning epochs up to that
        target, but every step heads straight for it (init -> target, interpolated), then the same window."""
        steps, windows = self.schedule()
        target, start, end = windows[index]
        epochs = [e for e, _ in steps if e <= start]
        ramp = sparsity_steps_through_targets(
            [target],
            window_epochs=1,
            init=self.init_sparsity,
            steps_per_target=len(epochs),
            interpolation=self.interpolation,
        )
        return [(e, s) for e, (_, s) in zip(epochs, ramp.steps, strict=True)], [(target, start, end)]

    def to_spec(self, steps: Steps | None = None, windows: Windows | None = None) -> GradualSpec:
        from ovit_ray.training.gradual import GradualSpec

        default_steps, default_windows = self.schedule()
        return GradualSpec(
            steps=steps or default_steps,
            windows=windows or default_windows,
            **self.model_dump(include=set(GradualSpec.__dataclass_fields__) - {"steps", "windows"}),
        )

    def run_key(self, strategy: str, steps: Sequence, windows: Sequence) -> str:
        """Deterministic id of what a run computes: same knobs and schedule -> same Ray run, MLflow run, rows."""
        what = self.model_dump(exclude=PLACEMENT_FIELDS)
        blob = json.dumps(
            {"config": what, "strategy": strategy, "steps": steps, "windows": windows},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _one_line(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        message = e["msg"].removeprefix("Value error, ")  # model-level messages name their field already
        if e["loc"]:
            message = f"{'.'.join(str(x) for x in e['loc'])}: {message} (got {short_repr(e['input'])})"
        parts.append(message)
    return "; ".join(parts)


def make_config(values: Mapping[str, Any]) -> GradualConfig:
    """Validate; a `ValueError` whose one-line message names each bad field and its value."""
    try:
        return GradualConfig.model_validate(dict(values))
    except ValidationError as err:
        raise ValueError(_one_line(err)) from None


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> GradualConfig:
    """YAML file (optional) with `overrides` on top (None values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_yaml_mapping(path, "config file"))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return make_config(values)
