"""Search spaces: what each searched knob may take, in sweep files (`search.params`) and in the shared
`search_spaces/*.yaml` files a sweep names (`search.space`). Kind-agnostic: which knobs exist is the
kind's business (`orchestration.kinds`); here only the shape of a value or distribution is checked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping, short_repr
from ovit_ray.orchestration.specs.validation import Strict, validate_file

Scalar = bool | int | float | str
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
                if v is not None:  # null: the knob's "none" (a dense source, no follow-up step)
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
        return [value] if self.kind == "fixed" else list(value)  # a range is its (low, high) tuple


class SearchSpace(Strict):
    """A shared file of knobs and what each may take; `kind` says whose knobs they are (checked on use)."""

    description: str = ""
    kind: str | None = None
    params: dict[str, Dist] = Field(default_factory=dict)


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
