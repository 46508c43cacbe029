"""Search spaces (`search_spaces/*.yaml`): the knobs a sweep may search and what each may take.

Knobs are the fields of one gradual run (`specs.run.GradualConfig`) that are not set by the sweep's
resources/mlflow sections, plus `strategy` (one sparsity-sweep run, or one run per target).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping, short_repr
from ovit_ray.orchestration.specs.run import PLACEMENT_FIELDS, GradualConfig
from ovit_ray.orchestration.specs.validation import Strict, validate_file

Scalar = bool | int | float | str
STRATEGIES = ("sweep", "independent")
# Set by the sweep's `resources` and `mlflow` sections (and the CLI), never inside `train`.
RESOURCE_FIELDS = {"workers", "cpus_per_worker", "gpus_per_worker", "max_failures"}
RESERVED_TRAIN_FIELDS = PLACEMENT_FIELDS | RESOURCE_FIELDS
KNOBS = (set(GradualConfig.model_fields) - RESERVED_TRAIN_FIELDS - {"targets"}) | {"strategy"}
MAX_VALUES = 1_000  # values in one choice or grid


def _scalar(value: Any, where: str) -> Scalar:
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"{where} must be a number, string or boolean, got {short_repr(value)}")
    return value


class Dist(Strict):
    """One knob of a search space: a fixed value or exactly one distribution.

    YAML: `0.001` (fixed), `{loguniform: [1e-9, 1e-6]}`, `{uniform: [lo, hi]}`, `{randint: [lo, hi]}`
    (both ends included), `{choice: [a, b]}` (sampled), `{grid: [a, b]}` (every value, grid/random only).
    """

    fixed: Scalar | None = None
    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(None, max_length=MAX_VALUES)
    grid: list[Any] | None = Field(None, max_length=MAX_VALUES)

    @model_validator(mode="before")
    @classmethod
    def _wrap_scalar(cls, value: Any) -> Any:
        return value if isinstance(value, Mapping) else {"fixed": _scalar(value, "a fixed value")}

    @field_validator("choice", "grid")
    @classmethod
    def _values(cls, values: list[Any] | None) -> list[Any] | None:
        if values is not None:
            if not values:
                raise ValueError("needs at least one value")
            for v in values:
                _scalar(v, "every value")
        return values

    @model_validator(mode="after")
    def _one_kind(self) -> Dist:
        kinds = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(type(self).model_fields)}, got {kinds or 'none'}"
            )
        for kind in ("loguniform", "uniform"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind}: low must be below high, got {list(bounds)}")
        if self.randint is not None and self.randint[0] > self.randint[1]:
            raise ValueError(f"randint: low must be <= high, got {list(self.randint)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform: bounds must be > 0, got {list(self.loguniform)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    def values_to_check(self) -> list[Scalar]:
        """Every value the knob can take, or the range ends: enough to validate it against the run model."""
        value = getattr(self, self.kind)
        if self.kind == "fixed":
            return [value]
        if self.kind in ("choice", "grid"):
            return list(value)
        return [value[0], value[1]]


def known_knobs(params: dict[str, Dist]) -> dict[str, Dist]:
    """`params` if every name is a knob; else the error names the unknown ones and lists the knobs."""
    unknown = sorted(set(params) - KNOBS)
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; knobs: {', '.join(sorted(KNOBS))}")
    return params


class SearchSpace(Strict):
    """Knobs (gradual-run fields, plus `strategy`) and what each may take."""

    description: str = ""
    params: dict[str, Dist] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _known(cls, params: dict[str, Dist]) -> dict[str, Dist]:
        return known_knobs(params)


def spaces_dir(sweep_path: Path) -> Path:
    """`search_spaces/` next to the `sweeps/` tree holding the file (or $OVIT_RAY_SEARCH_SPACES)."""
    if os.environ.get("OVIT_RAY_SEARCH_SPACES"):
        return Path(os.environ["OVIT_RAY_SEARCH_SPACES"])
    for parent in sweep_path.resolve().parents:
        if (parent / "search_spaces").is_dir():
            return parent / "search_spaces"
    return sweep_path.resolve().parent / "search_spaces"


def load_space(path: str | Path) -> SearchSpace:
    path = Path(path)
    return validate_file(SearchSpace, read_yaml_mapping(path, "search space"), path)
