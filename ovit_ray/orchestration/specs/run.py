"""A run's settings as the orchestration sees them: the training spec plus where its results go.

`GradualConfig` is the `training.spec.RunSpec` with placement fields added; it is validated once, here, at
the edge (YAML, flags, sweep knobs) and then handed unchanged to Tune trials and Train workers. Errors
come out as one line naming each bad field and the value it got.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping, short_repr
from ovit_ray.training.spec import MAX_EPOCHS, MAX_SEED, MAX_WORKERS, RunSpec, Schedule

__all__ = [
    "MAX_EPOCHS",
    "MAX_SEED",
    "MAX_WORKERS",
    "PLACEMENT_FIELDS",
    "GradualConfig",
    "load_config",
    "make_config",
]

# Fields that say where results go, not what is computed: they do not enter the run key.
PLACEMENT_FIELDS = {"out", "mlflow_uri", "experiment", "ray_address", "max_failures"}


class GradualConfig(RunSpec):
    """One gradual run and where it reports (see `RunSpec` for what it computes)."""

    max_failures: int = Field(2, ge=0, le=1000)
    out: str = "runs/gradual"
    mlflow_uri: str | None = None
    experiment: str = "ovit-ray-gradual"
    ray_address: str | None = None

    def used_values(self) -> dict[str, Any]:
        """What this run computes with: fields that are set and that its settings read (MLflow params).

        Left out: placement, None, the single-run schedule under `targets` (and the reverse), lr_min of a
        constant schedule, the distillation temperature and teacher without distillation, the Fisher knobs of magnitude.
        """
        unused = set(PLACEMENT_FIELDS)
        unused |= {"final_sparsity", "end_epoch"} if self.targets else {"steps_per_target"}
        if self.lr_schedule == "constant":
            unused.add("lr_min")
        if self.distill_weight == 0:
            unused |= {"distill_temperature", "distill_teacher"}
        if not self.prune_settings().uses_fisher:
            unused |= {"num_grads", "damp", "grad_batch_size", "fisher_dtype"}
        return {k: v for k, v in self.model_dump(mode="json", exclude=unused).items() if v is not None}

    def computed_values(self) -> dict[str, Any]:
        """Every value that decides what the run computes (all fields but placement)."""
        return self.model_dump(mode="json", exclude=PLACEMENT_FIELDS)

    def run_key(self, strategy: str, schedule: Schedule) -> str:
        """Deterministic id of what a run computes: same knobs and schedule -> same Ray run, MLflow run, rows."""
        blob = json.dumps(
            {
                "config": self.computed_values(),
                "strategy": strategy,
                "steps": schedule.steps,
                "windows": schedule.windows,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _optional_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of `model` as optional (default None), with its type, bounds and choices kept."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        params = (info.annotation, *info.metadata)
        kind: Any = Annotated[params] if info.metadata else info.annotation
        fields[name] = (Optional[kind], None)  # noqa: UP045 (a runtime type, built from a variable)
    return fields


# A sweep file's `train` section: base values of its trials' runs, typed and bounded field by field. The
# knobs complete them, so the checks across fields run on each trial's values (`make_config`).
RunBase = create_model(
    "RunBase",
    __config__=ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False),
    **_optional_fields(GradualConfig),
)


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
