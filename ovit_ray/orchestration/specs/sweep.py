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
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.common.yaml_files import short_repr
from ovit_ray.orchestration.specs.run import (
    MAX_EPOCHS,
    MAX_SEED,
    MAX_WORKERS,
    GradualConfig,
    RunBase,
    make_config,
)
from ovit_ray.orchestration.specs.search_space import RESERVED_TRAIN_FIELDS, STRATEGIES, Dist, known_knobs
from ovit_ray.orchestration.specs.validation import Strict

MAX_TRIALS = 100_000  # trials one sweep may start (grid points x samples)


class Objective(Strict):
    """What the searcher optimises; val_* select on validation, top1_* are the held-out test values
    (selecting on them would leak test into the search; kept for comparison with older sweeps)."""

    metric: Literal[
        "val_top1_final", "val_top1_mean", "top1_final", "top1_mean", "gpu_hours", "cpu_hours", "epochs_total"
    ]
    mode: Literal["max", "min"]


class Asha(Strict):
    """Early stopping on intermediate validation top-1, per reported epoch."""

    type: Literal["asha"] = "asha"
    metric: Literal["val_top1"] = "val_top1"
    grace_period: int = Field(1, gt=0, le=MAX_EPOCHS)
    reduction_factor: float = Field(2.0, gt=1)


class Search(Strict):
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
        return known_knobs(overrides)


class Resources(Strict):
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


class Mlflow(Strict):
    uri: str | None = None
    experiment: str = Field("ovit-ray-sweeps", min_length=1)

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return _no_credentials(uri, "the URI")


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    train: RunBase = RunBase()
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
    def _train_fields(cls, train: RunBase) -> RunBase:
        reserved = sorted(train.model_fields_set & RESERVED_TRAIN_FIELDS)
        if reserved:
            raise ValueError(
                f"{reserved} are set by the sweep's resources/mlflow sections and the CLI, not inside train"
            )
        targets = train.model_dump().get("targets")  # RunBase is built at import: no static fields
        if not targets:
            raise ValueError(f"needs targets (the sparsities each trial reports), got {short_repr(targets)}")
        return train

    @property
    def base(self) -> dict[str, Any]:
        """The values the sweep file sets in `train` (defaults of the run model fill the rest)."""
        return self.train.model_dump(exclude_unset=True)

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
        values = {**self.base, **self.resources.model_dump(exclude={"custom"}), **knobs}
        values.pop("strategy", None)
        return values

    def trial_config(self, knobs: Mapping[str, Any]) -> GradualConfig:
        """One trial's validated run: train base, resources, then the trial's knobs (`strategy` aside)."""
        return make_config(self.run_values(knobs))

    def fingerprint(self) -> str:
        """What the sweep computes; a resume must find the same one."""
        blob = self.model_dump(mode="json", exclude={"description", "mlflow", "storage"})
        blob["train"] = self.train.model_dump(mode="json", exclude_unset=True)  # what the file says
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def max_trials(self) -> int:
        """Trials the sweep starts: grid points x num_samples (the product of grid sizes)."""
        grid = math.prod(len(d.grid) for d in self.knobs.values() if d.grid is not None)
        return grid * self.search.num_samples
