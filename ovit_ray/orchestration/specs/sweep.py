"""Validated sweep files (`sweeps/*.yaml`) and search spaces (`search_spaces/*.yaml`), pydantic v2.

A sweep names a search space by file stem and may override single knobs of it. Its `train` section
holds the base values of one gradual run (the fields of `orchestration.config.GradualConfig`); every
value a search can take is checked against that model on load, so a bad knob fails before Ray
starts. Errors come out as one `ValueError` with one line per problem, "FILE: key.path: message, got
VALUE".
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.common.yaml_files import clip_line, read_yaml_mapping, short_repr
from ovit_ray.orchestration.specs.run import (
    MAX_EPOCHS,
    MAX_SEED,
    MAX_WORKERS,
    PLACEMENT_FIELDS,
    GradualConfig,
    make_config,
)

Scalar = bool | int | float | str
STRATEGIES = ("sweep", "independent")
# Set by the sweep's `resources` and `mlflow` sections (and the CLI), never inside `train`.
RESOURCE_FIELDS = {"workers", "cpus_per_worker", "gpus_per_worker", "max_failures"}
RESERVED_TRAIN_FIELDS = PLACEMENT_FIELDS | RESOURCE_FIELDS
KNOBS = (set(GradualConfig.model_fields) - RESERVED_TRAIN_FIELDS - {"targets"}) | {"strategy"}
MAX_TRIALS = 100_000  # trials one sweep may start (grid points x samples)
MAX_VALUES = 1_000  # values in one choice or grid


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _scalar(value: Any, where: str) -> Scalar:
    if not isinstance(value, bool | int | float | str):
        raise ValueError(f"{where} must be a number, string or boolean, got {short_repr(value)}")
    return value


class Dist(_Strict):
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


class SearchSpace(_Strict):
    """Knobs (gradual-run fields, plus `strategy`) and what each may take."""

    description: str = ""
    params: dict[str, Dist] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _known(cls, params: dict[str, Dist]) -> dict[str, Dist]:
        unknown = sorted(set(params) - KNOBS)
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; knobs: {', '.join(sorted(KNOBS))}")
        return params


class Objective(_Strict):
    """What the searcher optimises; val_* select on validation, top1_* are the held-out test values
    (selecting on them would leak test into the search; kept for comparison with older sweeps)."""

    metric: Literal[
        "val_top1_final", "val_top1_mean", "top1_final", "top1_mean", "gpu_hours", "cpu_hours", "epochs_total"
    ]
    mode: Literal["max", "min"]


class Asha(_Strict):
    """Early stopping on intermediate validation top-1, per reported epoch."""

    type: Literal["asha"] = "asha"
    metric: Literal["val_top1"] = "val_top1"
    grace_period: int = Field(1, gt=0, le=MAX_EPOCHS)
    reduction_factor: float = Field(2.0, gt=1)


class Search(_Strict):
    space: str
    overrides: dict[str, Dist] = Field(default_factory=dict)
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    num_samples: int = Field(1, gt=0, le=MAX_TRIALS)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="val_top1_final", mode="max")], min_length=1
    )
    scheduler: Asha | None = None
    max_concurrent_trials: int | None = Field(None, gt=0, le=MAX_TRIALS)

    @field_validator("overrides")
    @classmethod
    def _known(cls, overrides: dict[str, Dist]) -> dict[str, Dist]:
        return SearchSpace._known(overrides)


class Resources(_Strict):
    """Per trial: Ray Train workers and what each holds. One worker runs inside the Tune trial itself."""

    workers: int = Field(1, gt=0, le=MAX_WORKERS)
    cpus_per_worker: float = Field(1.0, gt=0, le=4096)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)
    max_failures: int = Field(1, ge=0, le=1000)
    # Custom Ray resources per worker (a node-type marker, or `fake_gpu` on the local fake cluster):
    # trials then run only on nodes offering them, and the autoscaler starts such nodes on demand.
    custom: dict[str, float] = Field(default_factory=dict)

    @field_validator("custom")
    @classmethod
    def _positive(cls, custom: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in custom.items() if not (0 < v < math.inf) or k in ("CPU", "GPU")}
        if bad:
            raise ValueError(
                f"custom resources need a name other than CPU/GPU and a finite amount > 0, got {bad}"
            )
        return custom


def _no_credentials(uri: str | None, what: str) -> str | None:
    return uri if uri is None else check_no_credentials(uri, what)


class Mlflow(_Strict):
    uri: str | None = None
    experiment: str = Field("ovit-ray-sweeps", min_length=1)

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return _no_credentials(uri, "the URI")


class SweepConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    train: dict[str, Any] = Field(default_factory=dict)
    strategy: Literal["sweep", "independent", "both"] = "sweep"
    search: Search
    resources: Resources = Resources()
    storage: str | None = None  # Ray Tune storage path or URI; default <out>/ray
    mlflow: Mlflow = Mlflow()
    # Filled in by `load_sweep`: the referenced space with the overrides applied.
    space: dict[str, Dist] = Field(default_factory=dict)

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str | None) -> str | None:
        return _no_credentials(storage, "the storage URI")

    @field_validator("train")
    @classmethod
    def _train_fields(cls, train: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(set(train) & RESERVED_TRAIN_FIELDS)
        if reserved:
            raise ValueError(
                f"{reserved} are set by the sweep's resources/mlflow sections and the CLI, not inside train"
            )
        if not train.get("targets"):
            raise ValueError(
                f"needs targets (the sparsities each trial reports), got {short_repr(train.get('targets'))}"
            )
        return train

    @property
    def knobs(self) -> dict[str, Dist]:
        """The searched knobs, with `strategy: both` turned into a grid over both strategies."""
        if self.strategy == "both" and "strategy" not in self.space:
            return {**self.space, "strategy": Dist(grid=list(STRATEGIES))}
        return (
            {"strategy": Dist(fixed=self.strategy), **self.space}
            if "strategy" not in self.space
            else self.space
        )

    def run_values(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """GradualConfig fields of one trial: train base, resources, then the trial's knobs."""
        values = {**self.train, **self.resources.model_dump(exclude={"custom"}), **knobs}
        values.pop("strategy", None)
        return values

    def fingerprint(self) -> str:
        """What the sweep computes; a resume must find the same one."""
        blob = self.model_dump(mode="json", exclude={"description", "mlflow", "storage"})
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def max_trials(self) -> int:
        """Trials the sweep starts: grid points x num_samples (the product of grid sizes)."""
        grid = math.prod(len(d.grid) for d in self.knobs.values() if d.grid is not None)
        return grid * self.search.num_samples


def _ends(dist: Dist) -> list[Scalar]:
    """The extreme values of a knob (both ends of a range, the smallest and largest of a numeric list)."""
    values = dist.values_to_check()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sorted({min(values), max(values)})
    return [values[0], values[-1]] if len(values) > 1 else values


def _value_problems(sweep: SweepConfig) -> list[str]:
    """Knob values against the run model: the base first (one line if it is wrong, not one per knob),
    then each value of each knob, then the extreme values of each pair of knobs together (e.g. an
    lr_min range reaching above an lr_max range), so no trial fails on a value the file allows."""
    first = {k: d.values_to_check()[0] for k, d in sweep.knobs.items()}
    try:
        make_config(sweep.run_values(first))
    except ValueError as err:
        return [f"train (with the first value of each knob): {err}"]
    problems, sound = [], []
    for name, dist in sweep.knobs.items():
        if name == "strategy":
            continue
        for value in dist.values_to_check():
            try:
                make_config(sweep.run_values({**first, name: value}))
            except ValueError as err:
                problems.append(f"search.space.{name}: {short_repr(value)} is not a valid {name} ({err})")
                break
        else:
            if dist.kind != "fixed":
                sound.append(name)
    for i, a in enumerate(sound):
        for b in sound[i + 1 :]:
            bad = next(
                (
                    (x, y, err)
                    for x in _ends(sweep.knobs[a])
                    for y in _ends(sweep.knobs[b])
                    for err in [_invalid(sweep, {**first, a: x, b: y})]
                    if err
                ),
                None,
            )
            if bad:
                problems.append(
                    f"search.space: {a}={short_repr(bad[0])} with {b}={short_repr(bad[1])} is not a "
                    f"valid run ({bad[2]}); narrow the ranges"
                )
    return problems


def _invalid(sweep: SweepConfig, knobs: dict[str, Any]) -> str | None:
    try:
        make_config(sweep.run_values(knobs))
    except ValueError as err:
        return str(err)
    return None


def _check_consistency(sweep: SweepConfig) -> list[str]:
    """Cross-field rules pydantic cannot see (one line per root cause): algorithm vs distributions,
    knob values vs the run model, sizes."""
    problems = []
    algorithm = sweep.search.algorithm
    kinds = {name: dist.kind for name, dist in sweep.knobs.items()}
    if algorithm == "optuna" and "grid" in kinds.values():
        problems.append(
            f"search.space: Optuna samples, it cannot run a grid ({', '.join(k for k, v in kinds.items() if v == 'grid')}); "
            "use choice, or search.algorithm grid/random"
        )
    sampled = [k for k, v in kinds.items() if v not in ("grid", "fixed")]
    if algorithm == "grid" and sampled:
        problems.append(
            f"search.space: search.algorithm grid needs grid or fixed values, got sampled {', '.join(sampled)}"
        )
    strategy = sweep.knobs.get("strategy")
    if strategy is not None and (
        strategy.kind not in ("fixed", "grid", "choice")
        or any(v not in STRATEGIES for v in strategy.values_to_check())
    ):
        problems.append(
            f"search.space.strategy: must take values in {list(STRATEGIES)}, got "
            f"{short_repr(strategy.values_to_check())}"
        )
    if sweep.max_trials > MAX_TRIALS:
        problems.append(
            f"search: {sweep.max_trials} trials (grid points x num_samples); at most {MAX_TRIALS}"
        )
    else:
        problems += _value_problems(sweep)
    if algorithm == "grid" and sweep.search.num_samples != 1:
        problems.append(
            "search.num_samples: a grid runs every point exactly once (add a seed grid for "
            f"repeats), got {sweep.search.num_samples}"
        )
    if sweep.strategy == "both" and algorithm == "optuna":
        problems.append(
            "strategy: 'both' runs each strategy as a grid point, which needs search.algorithm "
            "grid or random, got optuna"
        )
    modes = [o.metric for o in sweep.search.objectives]
    if len(set(modes)) != len(modes):
        problems.append(f"search.objectives: each metric at most once, got {modes}")
    return problems


def _problems(err: ValidationError) -> list[str]:
    """One line per distinct location (a union reports once per member; keep the first); a required key
    missing next to an unknown one is one misspelling, so one line."""
    seen: dict[str, str] = {}
    missing: dict[str, str] = {}  # parent path -> location of its missing key
    extra: dict[str, str] = {}  # parent path -> its first unknown key
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not (isinstance(x, str) and ("[" in x or x in _TYPE_TAGS))]
        where = ".".join(loc) or "file"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("missing", "value_error", "assertion_error") or "got" not in message:
            message += f", got {short_repr(e['input'])}" if e["type"] != "missing" else ""
        if e["type"] in ("missing", "extra_forbidden"):
            (missing if e["type"] == "missing" else extra).setdefault(".".join(loc[:-1]), where)
        seen.setdefault(where, f"{where}: {message}")
    for parent in {k.rsplit(".", 1)[0] for k in seen if "." in k}:  # several required keys of one value
        keys = [
            k for k, line in seen.items() if k.rsplit(".", 1)[0] == parent and line.endswith("Field required")
        ]
        if len(keys) > 1 and parent not in extra:
            for k in keys:
                seen.pop(k)
            seen[parent] = f"{parent}: required keys missing: {', '.join(k.rsplit('.', 1)[1] for k in keys)}"
    for parent, where in missing.items():
        if parent in extra and where in seen:
            typo = seen.pop(extra[parent])
            seen[where] = f"{where}: required, but the file has an unknown key ({typo})"
    return list(seen.values())


_TYPE_TAGS = {"bool", "int", "float", "str", "function-after", "function-before", "function-wrap"}


def _report(path: Path, problems: list[str]) -> ValueError:
    return ValueError("\n".join(clip_line(f"{path}: {p}") for p in problems))


def _validate(model: type[BaseModel], values: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise _report(path, _problems(err)) from None


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
    return _validate(SearchSpace, read_yaml_mapping(path, "search space"), path)


def load_sweep(path: str | Path) -> SweepConfig:
    """Read, validate and resolve a sweep file; `ValueError` (one line per problem) on any mistake."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file")
    if "space" in raw:
        raise ValueError(
            clip_line(
                f"{path}: space: not a sweep key (use search.space and search.overrides), "
                f"got {short_repr(raw['space'])}"
            )
        )
    sweep = _validate(SweepConfig, raw, path)
    space_name = sweep.search.space
    if not space_name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(
            clip_line(f"{path}: search.space: a file stem in search_spaces/, got {short_repr(space_name)}")
        )
    space_path = spaces_dir(path) / f"{space_name}.yaml"
    if not space_path.is_file():
        raise ValueError(f"{path}: search.space: no search space {space_name!r} (looked for {space_path})")
    space = load_space(space_path)
    sweep = sweep.model_copy(update={"space": {**space.params, **sweep.search.overrides}})
    problems = _check_consistency(sweep)
    if problems:
        raise _report(path, problems)
    return sweep
