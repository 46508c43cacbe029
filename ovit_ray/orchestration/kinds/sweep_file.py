"""The one sweep-file dialect, for every kind of experiment (see docs/SWEEP_FILES.md).

    name: quickstart                      # shared keys: name, model and data, seeds, resources, storage, mlflow
    model: digits-vit
    seeds: [0]                            # a grid over the trials' `seed`
    gradual:                              # ONE section, named after the kind: fixed values of its knobs
      targets: [0.5, 0.75, 0.9]
    search:                               # for every kind: grid, random or Optuna TPE (+ ASHA when it reports epochs)
      space: quickstart                   # optional: a shared file in search_spaces/
      params: {damp: {loguniform: [1e-9, 1e-5]}}
      algorithm: optuna
      num_samples: 6
    resources: {workers: 1, cpus_per_worker: 1}
    mlflow: {experiment: ovit-ray-quickstart}

Every value a trial can take is checked against the kind's spec when the file loads, so a bad knob fails
before Ray starts, one line per root cause ("FILE: key.path: message, got VALUE").
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from ovit_ray.knobs import Knobs
from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.common.yaml_files import clip_line, read_yaml_mapping, short_repr
from ovit_ray.orchestration.kinds._registry import get_kind, kind_names
from ovit_ray.orchestration.kinds.base import ExperimentKind
from ovit_ray.orchestration.specs.search_space import Dist, load_space, spaces_dir
from ovit_ray.orchestration.specs.validation import Strict, one_line, report_problems, validate_file
from ovit_ray.training.spec import MAX_SEED

__all__ = ["OBJECTIVES", "Sweep", "SweepFile", "load_sweep", "sweep_from"]

MAX_TRIALS = 100_000  # trials one sweep may start (grid points x samples)
# Objectives every kind's trial reports (val_* select on validation; top1_* are the held-out test values,
# kept for comparison, selecting on them leaks the test split into the search).
OBJECTIVES = (
    "val_top1_final",
    "val_top1_mean",
    "top1_final",
    "top1_mean",
    "epochs_total",
    "cpu_hours",
    "gpu_hours",
)
SHARED = ("model", "checkpoint", "dataset", "data_root", "split_seed")  # top level, for every kind
RESOURCE_FIELDS = ("workers", "cpus_per_worker", "gpus_per_worker")  # from `resources:` into the spec


class Objective(Strict):
    metric: Literal[OBJECTIVES]  # type: ignore[valid-type]  # a tuple of literals, spelled once
    mode: Literal["max", "min"]


class Asha(Strict):
    """Early stopping on intermediate validation top-1, per reported epoch (kinds that report epochs)."""

    type: Literal["asha"] = "asha"
    metric: Literal["val_top1"] = "val_top1"
    grace_period: int = Field(1, gt=0, le=100_000)
    reduction_factor: float = Field(2.0, gt=1)


class Search(Strict):
    space: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    params: dict[str, Dist] = Field(default_factory=dict)
    algorithm: Literal["optuna", "random", "grid"] = "grid"
    num_samples: int = Field(1, gt=0, le=MAX_TRIALS)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="val_top1_final", mode="max")], min_length=1
    )
    scheduler: Asha | None = None
    max_concurrent_trials: int | None = Field(None, gt=0, le=MAX_TRIALS)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # the searcher's sampling seed


class Resources(Strict):
    """Per trial: workers and what each holds (one worker runs inside the trial itself). `local`: run the
    trials one after another in this process, without Ray (grids only: what a busy laptop wants)."""

    workers: int = Field(1, gt=0, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0, le=4096)
    gpus_per_worker: float = Field(0.0, ge=0, le=64)
    max_failures: int = Field(1, ge=0, le=1000)
    # Custom Ray resources per worker (a node-type marker, or `fake_gpu` on the local fake cluster):
    # trials then run only on nodes offering them, and the autoscaler starts such nodes on demand.
    custom: dict[str, float] = Field(default_factory=dict)
    local: bool = False

    @field_validator("custom")
    @classmethod
    def _positive(cls, custom: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in custom.items() if not (0 < v < math.inf) or k in ("CPU", "GPU")}
        if bad:
            raise ValueError(
                f"custom resources need a name other than CPU/GPU and a finite amount > 0, got {bad}"
            )
        return custom


class Mlflow(Strict):
    uri: str | None = None
    experiment: str = Field("ovit-ray-sweeps", min_length=1, max_length=200)
    # Model Registry name of the best models (`register:` in the file)
    register_name: str | None = Field(None, alias="register", pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return uri if uri is None else check_no_credentials(uri, "the URI")


class SweepFile(Strict):
    """The shared keys of a sweep file (its kind section is validated by the kind's spec)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    imports: list[str] = Field(default_factory=list)  # modules registering your own kinds or methods
    model: str | None = None
    checkpoint: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    split_seed: int | None = Field(None, ge=0, le=MAX_SEED)
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=1000
    )
    search: Search = Field(default_factory=Search)
    resources: Resources = Field(default_factory=Resources)
    storage: str | None = None  # Ray Tune storage path or URI; default <out>/ray
    mlflow: Mlflow = Field(default_factory=Mlflow)

    @field_validator("storage")
    @classmethod
    def _storage(cls, storage: str | None) -> str | None:
        return storage if storage is None else check_no_credentials(storage, "the storage URI")


@functools.cache
def _section_model(name: str, spec: type[Knobs]) -> type[BaseModel]:
    """`{name: section}` with the section's fields those of the kind's spec, each optional: a section's
    values are checked field by field (errors say `gradual.damp`); the checks across fields run on each
    trial's complete values."""
    fields: dict[str, Any] = {}
    for field, info in spec.model_fields.items():
        params = (info.annotation, *info.metadata)
        kind: Any = Annotated[params] if info.metadata else info.annotation
        fields[field] = (Optional[kind], None)  # noqa: UP045 (a runtime type, built from a variable)
    config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    section: Any = create_model(f"{spec.__name__}Section", __config__=config, **fields)
    wrapper: dict[str, Any] = {name: (section, None)}
    return create_model(f"{spec.__name__}File", __config__=config, **wrapper)


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: its shared settings, its kind, the kind section and every knob a trial sets."""

    file: SweepFile
    kind: str
    section: dict[str, Any]  # the kind section's values, as written
    knobs: dict[str, Dist]  # searched and fixed knobs (the seed grid included)
    path: str = ""

    @property
    def name(self) -> str:
        return self.file.name

    def experiment_kind(self) -> ExperimentKind:
        return get_kind(self.kind)

    def base(self) -> dict[str, Any]:
        """A trial's values before its knobs: the shared keys and resources the spec has, then the section."""
        fields = get_kind(self.kind).spec.model_fields
        shared = {k: getattr(self.file, k) for k in SHARED if getattr(self.file, k) is not None}
        resources = {k: getattr(self.file.resources, k) for k in RESOURCE_FIELDS}
        return {k: v for k, v in {**shared, **resources}.items() if k in fields} | self.section

    def spec(self, knobs: Mapping[str, Any]) -> Any:
        """One trial's validated spec; a `ValueError` with one line naming each bad field and its value."""
        try:
            return get_kind(self.kind).spec.model_validate({**self.base(), **knobs})
        except ValidationError as err:
            raise ValueError(one_line(err)) from None

    def fixed_values(self) -> dict[str, Any]:
        """The knob values every trial shares."""
        return {k: d.fixed for k, d in self.knobs.items() if d.kind == "fixed"}

    def first_values(self) -> dict[str, Any]:
        """The first value of every knob: one trial standing for the sweep (checks, labels, target counts)."""
        return {k: d.values_to_check()[0] for k, d in self.knobs.items()}

    @property
    def searched(self) -> list[str]:
        return [k for k, d in self.knobs.items() if d.kind != "fixed"]

    @property
    def max_trials(self) -> int:
        """Trials the sweep starts: distinct grid points x num_samples."""
        grid = self.grid_size
        if grid <= MAX_TRIALS:
            grid = len(self.grid_points())
        return grid * self.file.search.num_samples

    @property
    def grid_size(self) -> int:
        """Combinations of the grid knobs, before the kind maps equal runs to one (`same_run`)."""
        return math.prod(len(d.grid) for d in self.knobs.values() if d.grid is not None)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every distinct run of the grid knobs (what a grid sweep runs), fixed knobs included, in grid
        order; combinations the kind says are the same run (`same_run`) appear once."""
        fixed = self.fixed_values()
        grids = {k: d.grid or [] for k, d in self.knobs.items() if d.kind == "grid"}
        kind = self.experiment_kind()
        points: dict[str, dict[str, Any]] = {}
        for combo in itertools.product(*grids.values()):
            point = kind.same_run({**fixed, **dict(zip(grids, combo, strict=True))})
            points.setdefault(json.dumps(point, sort_keys=True, default=str), point)
        return list(points.values())

    def fingerprint(self) -> str:
        """What the sweep computes; a resume must find the same one (descriptions, MLflow, storage aside)."""
        blob = {
            "kind": self.kind,
            "base": self.base(),
            "knobs": {k: d.model_dump(mode="json", exclude_none=True) for k, d in self.knobs.items()},
            "search": self.file.search.model_dump(
                mode="json", exclude={"num_samples", "max_concurrent_trials"}
            ),
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


_OLD_DIALECT = {
    "train": "rename `train:` to `gradual:`, move model/checkpoint/dataset/data_root/split_seed to the top level "
    "and `strategy:` into search.params (`strategy: {grid: [sweep, independent]}` for both)",
    "space": "use search.space and search.params",
}


def _kind_of(path: Path, raw: Mapping[str, Any]) -> str:
    for key, hint in _OLD_DIALECT.items():
        if key in raw:
            raise ValueError(
                clip_line(f"{path}: {key}: the old sweep-file dialect; {hint} (docs/SWEEP_FILES.md)")
            )
    sections = [k for k in raw if k in kind_names()]
    if len(sections) != 1:
        raise ValueError(
            f"{path}: needs exactly one kind section ({', '.join(kind_names())}), got {sections or 'none'}"
        )
    return sections[0]


def _resolve_knobs(
    path: Path, file: SweepFile, kind: ExperimentKind, expanded: dict[str, Dist]
) -> dict[str, Dist]:
    """The section's expanded shorthands, the space file's knobs (if named), the file's `search.params` over
    them, the seed grid."""
    params: dict[str, Dist] = dict(expanded)
    if file.search.space is not None:
        space_path = spaces_dir(path) / f"{file.search.space}.yaml"
        if not space_path.is_file():
            raise ValueError(
                f"{path}: search.space: no search space {file.search.space!r} (looked for {space_path})"
            )
        space = load_space(space_path)
        if space.kind not in (None, kind.name):
            raise ValueError(
                f"{path}: search.space: {space_path.name} holds {space.kind} knobs, not {kind.name}"
            )
        params.update(space.params)
    params.update(file.search.params)
    problems = [
        f"search.params.{k}: set it in the file's resources section" for k in params if k in RESOURCE_FIELDS
    ]
    unknown = [k for k in params if k not in kind.spec.model_fields]
    if unknown:  # one line: several unknown knobs are usually one mistake (a space of another kind)
        where = (
            f"search.params.{unknown[0]}: not a knob"
            if len(unknown) == 1
            else f"search.params ({', '.join(unknown)}): not knobs"
        )
        problems.append(f"{where} of {kind.name}; knobs: {', '.join(kind.spec.model_fields)}")
    if problems:
        raise report_problems(path, problems)
    seeds = list(dict.fromkeys(file.seeds))
    if "seed" not in params and "seed" in kind.spec.model_fields:
        params["seed"] = Dist(fixed=seeds[0]) if len(seeds) == 1 else Dist(grid=seeds)
    elif "seed" not in kind.spec.model_fields and seeds != [0]:
        raise ValueError(f"{path}: seeds: {kind.name} trials take no seed, got {seeds}")
    return params


def _value_problems(sweep: Sweep) -> list[str]:
    """Knob values against the kind's spec: the base first (one line if it is wrong, not one per knob),
    then each value of each knob, then the extreme values of each pair of knobs together (an lr_min range
    reaching above an lr_max range), so no trial fails on a value the file allows."""
    first = sweep.first_values()
    try:
        sweep.spec(first)
    except ValueError as err:
        return [f"{sweep.kind} (with the first value of each knob): {err}"]
    problems, sound = [], []
    for name, dist in sweep.knobs.items():
        for value in dist.values_to_check():
            if (why := _invalid(sweep, {**first, name: value})) is not None:
                problems.append(f"search.params.{name}: {short_repr(value)} is not a valid {name} ({why})")
                break
        else:
            if dist.kind != "fixed":
                sound.append(name)
    for i, a in enumerate(sound):
        for b in sound[i + 1 :]:
            pairs = ((x, y) for x in _ends(sweep.knobs[a]) for y in _ends(sweep.knobs[b]))
            bad = next(((x, y, e) for x, y in pairs if (e := _invalid(sweep, {**first, a: x, b: y}))), None)
            if bad:
                problems.append(
                    f"search.params: {a}={short_repr(bad[0])} with {b}={short_repr(bad[1])} is not a valid "
                    f"trial ({bad[2]}); narrow the ranges"
                )
    return problems


def _ends(dist: Dist) -> list[Any]:
    """The extreme values of a knob (both ends of a range, the smallest and largest of a numeric list)."""
    values = dist.values_to_check()
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return sorted({min(values), max(values)})
    return [values[0], values[-1]] if len(values) > 1 else values


def _invalid(sweep: Sweep, knobs: dict[str, Any]) -> str | None:
    try:
        sweep.spec(knobs)
    except ValueError as err:
        return str(err)
    return None


def _search_problems(sweep: Sweep) -> list[str]:
    """Algorithm vs distributions, sizes, objectives: one line per root cause."""
    search, kind = sweep.file.search, sweep.experiment_kind()
    kinds = {name: dist.kind for name, dist in sweep.knobs.items()}
    grids = [k for k, v in kinds.items() if v == "grid"]
    sampled = [k for k, v in kinds.items() if v not in ("grid", "fixed")]
    problems = []
    if search.algorithm == "optuna" and grids:
        problems.append(
            f"search.params: Optuna samples, it cannot run a grid ({', '.join(grids)}); use choice, or "
            "search.algorithm grid/random"
            + (" (several seeds are a grid: one seed with Optuna)" if "seed" in grids else "")
        )
    if search.algorithm == "grid" and sampled:  # one root cause: num_samples then belongs to a sampler
        default = "" if "algorithm" in search.model_fields_set else ", the default"
        problems.append(
            f"search.params: search.algorithm grid needs grid or fixed values, got sampled {', '.join(sampled)} "
            f"(algorithm grid{default}: choose random or optuna to sample them)"
        )
    elif search.algorithm == "grid" and search.num_samples != 1:
        problems.append(
            f"search.num_samples: a grid runs every point exactly once (add seeds for repeats), got {search.num_samples}"
        )
    if search.scheduler is not None and not kind.reports_epochs:
        problems.append(
            f"search.scheduler: {kind.name} trials report no epochs, so ASHA cannot stop them early"
        )
    if sweep.file.resources.local and search.algorithm != "grid":
        problems.append(
            f"resources.local: runs a grid in this process; search.algorithm {search.algorithm} needs Ray"
        )
    metrics = [o.metric for o in search.objectives]
    if len(set(metrics)) != len(metrics):
        problems.append(f"search.objectives: each metric at most once, got {metrics}")
    if sweep.max_trials > MAX_TRIALS:
        return [
            *problems,
            f"search: {sweep.max_trials} trials (grid points x num_samples); at most {MAX_TRIALS}",
        ]
    return problems + _value_problems(sweep)


def sweep_from(raw: Mapping[str, Any], path: str | Path = "<sweep>", out_parent: Path | None = None) -> Sweep:
    """Validate and resolve sweep-file values (a file's, or a command's own: `ovit-ray train` builds one);
    `out_parent`: where sibling sweeps' output folders are (a transfer's sources)."""
    path = Path(path)
    for module in raw.get("imports") or []:
        try:
            importlib.import_module(str(module))
        except ImportError as err:
            raise ValueError(clip_line(f"{path}: imports: cannot import {module!r} ({err})")) from None
    kind = get_kind(_kind_of(path, raw))
    file = validate_file(SweepFile, {k: v for k, v in raw.items() if k != kind.name}, path)
    section = raw.get(kind.name) or {}
    if not isinstance(section, Mapping):
        raise ValueError(f"{path}: {kind.name}: a mapping of knob values, got {short_repr(section)}")
    try:
        section, expanded = kind.expand(section, out_parent)
    except ValidationError as err:
        raise ValueError(f"{path}: {kind.name}: {one_line(err)}") from None
    except ValueError as err:
        raise ValueError(f"{path}: {kind.name}.{err}") from None
    reserved = sorted(set(section) & (set(SHARED) | set(RESOURCE_FIELDS) | {"seed"}))
    if reserved:
        raise ValueError(
            f"{path}: {kind.name}: {reserved} belong at the top level (seeds, resources) of the file"
        )
    validate_file(_section_model(kind.name, kind.spec), {kind.name: dict(section)}, path)
    sweep = Sweep(file, kind.name, dict(section), _resolve_knobs(path, file, kind, expanded), str(path))
    problems = _search_problems(sweep)
    if problems:
        raise report_problems(path, problems)
    return sweep


def load_sweep(path: str | Path, out_parent: Path | None = None) -> Sweep:
    """Read, validate and resolve a sweep file; `ValueError` (one line per problem) on any mistake."""
    return sweep_from(read_yaml_mapping(path, "sweep file"), path, out_parent)
