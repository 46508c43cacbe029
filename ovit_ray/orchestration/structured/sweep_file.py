"""Structured sweep files (a top-level `structured:` section) and their search spaces (`search_spaces/optin.yaml`).

A structured sweep is a grid, not a search: every method x point of the space x seed is one structured prune
of the same model (scored once per method and seed, see `training.structured`), plus optional unstructured
points (`unstructured:`) and BoundaryDPT depth-pruning points (`depth:`, trained) timed the same way so the
frontier shows them all. Values are checked here, before
anything runs; errors name the key and the value.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
from ovit_ray.orchestration.depth.points import DepthGrid
from ovit_ray.orchestration.specs.search_space import Dist, spaces_dir
from ovit_ray.orchestration.specs.validation import Strict, validate_file
from ovit_ray.pruning.names import STRUCTURED_METHODS
from ovit_ray.training.spec import MethodName

StructuredMethod = Literal["optin", "structured-magnitude"]
assert set(StructuredMethod.__args__) == set(STRUCTURED_METHODS)  # type: ignore[attr-defined]


class Knobs(Strict):
    """One point of a structured space, with the bounds of each knob."""

    flops_ratio: float = Field(gt=0, le=1)
    token_share: float = Field(0.0, ge=0, le=0.85)
    round_to: Literal[1, 8, 32] = 1
    recover: Literal["none", "lsq"] = "none"
    calib_size: int = Field(32, gt=0, le=4096)
    lam: float = Field(100.0, gt=0)
    temperature: float = Field(4.0, gt=0)
    gram_tokens: int = Field(768, ge=2)

    @model_validator(mode="after")
    def _lsq_without_tokens(self) -> Knobs:
        if self.recover == "lsq" and self.token_share:
            raise ValueError(
                f"recover lsq does not rescale token-merging models, got token_share {self.token_share}"
            )
        return self


class StructuredSpace(Strict):
    """Knobs of `Knobs`, each a fixed value or a grid (a frontier wants every point)."""

    description: str = ""
    params: dict[str, Dist] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _grid_or_fixed(cls, params: dict[str, Dist]) -> dict[str, Dist]:
        unknown = sorted(set(params) - set(Knobs.model_fields))
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; knobs: {', '.join(Knobs.model_fields)}")
        sampled = sorted(k for k, d in params.items() if d.kind not in ("fixed", "grid"))
        if sampled:
            raise ValueError(f"{sampled}: a structured sweep takes fixed values or grids only")
        return params


class Unstructured(Strict):
    """Unstructured pruning alone at these sparsities, timed like the structured points."""

    method: MethodName = "ovit"
    sparsities: list[float] = Field(min_length=1)
    num_grads: int = Field(64, gt=0)
    block_size: int = Field(64, gt=0)

    @field_validator("sparsities")
    @classmethod
    def _range(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not 0 < v < 1]
        if bad:
            raise ValueError(f"sparsities must be in (0, 1), got {bad}")
        return values


class Speed(Strict):
    throughput_batch: int = Field(256, gt=0)
    latency_runs: int = Field(200, gt=0)
    throughput_runs: int = Field(20, gt=0)
    device: str = "cpu"


class StructuredGrid(Strict):
    model: str = "digits-vit"
    checkpoint: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    space: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    overrides: dict[str, Dist] = Field(default_factory=dict)
    methods: list[StructuredMethod] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    unstructured: Unstructured | None = None
    depth: DepthGrid | None = None  # BoundaryDPT points (two-stage training runs) on the same axes
    speed: Speed = Field(default_factory=Speed)
    light: bool = False  # run the points in the driver process instead of Tune trials
    # One point at a time by default: two trials timing models at once on one machine slow each other.
    max_concurrent_trials: int = Field(1, gt=0)
    cpus_per_trial: float = Field(1.0, gt=0)


class Mlflow(Strict):
    experiment: str = Field("ovit-ray-structured", min_length=1)
    tracking_uri: str | None = None


class StructuredSweep(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    structured: StructuredGrid
    mlflow: Mlflow = Field(default_factory=Mlflow)
    points: list[Knobs] = Field(default_factory=list)  # filled by `load_structured_sweep`


def is_structured_file(path: str | Path) -> bool:
    return "structured" in read_yaml_mapping(path, "sweep file")


def _points(space: dict[str, Dist], where: str) -> list[Knobs]:
    """Every grid point of the space, each checked against `Knobs` (the first bad one is named)."""
    names = list(space)
    values: list[list[Any]] = [list(d.grid) if d.grid is not None else [d.fixed] for d in space.values()]
    points = []
    for combo in itertools.product(*values):
        chosen: dict[str, Any] = dict(zip(names, combo, strict=True))
        try:
            points.append(Knobs(**chosen))
        except ValueError as err:
            raise ValueError(f"{where}: point {chosen}: {' '.join(str(err).split())[:300]}") from None
    return points


def load_structured_sweep(path: str | Path) -> StructuredSweep:
    """The validated sweep with its space (overrides applied) expanded into `points`."""
    path = Path(path)
    sweep = validate_file(StructuredSweep, read_yaml_mapping(path, "sweep file"), path)
    grid = sweep.structured
    space_file = spaces_dir(path) / f"{grid.space}.yaml"
    if not space_file.is_file():
        raise FileNotFoundError(f"{path}: structured.space: {space_file} not found")
    space = validate_file(StructuredSpace, read_yaml_mapping(space_file, "search space"), space_file)
    StructuredSpace(params=grid.overrides)  # the overrides' names and kinds
    merged = {**space.params, **grid.overrides}
    if "flops_ratio" not in merged:
        raise ValueError(f"{path}: structured: the space or overrides must give flops_ratio")
    return sweep.model_copy(update={"points": _points(merged, f"{path}: structured")})
