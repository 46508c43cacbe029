"""A structured sweep's `depth:` block: BoundaryDPT points (attention drops x activation removals x stage
order x width ratio x seed) as jobs of the structured grid, so their rows land in the same `structured_results`
file and frontier as OPTIN's and unstructured pruning's.

A point is one two-stage run (`training.depth`) inside its Tune trial (or in process with `light`), hosted by a
`LocalReporter` in `<out>/depth-runs/<run_key>/`: a retried trial or a re-run sweep continues the run from
its last epoch instead of starting again. Multi-worker runs go through `orchestration.depth.train` instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ovit_ray.orchestration.specs.validation import Strict
from ovit_ray.training.depth import DepthSpec
from ovit_ray.training.depth.spec import StageOrder

RUNS_FOLDER = "depth-runs"


def _attention_first() -> list[StageOrder]:
    return ["attention-first"]


def _no_width() -> list[float | None]:
    return [None]


class DepthGrid(Strict):
    """The points' grid; `train` holds any other `DepthSpec` knob (lr_max, batch_size, distill_temperature,
    max_steps_per_epoch, ...), shared by every point."""

    attention: list[int] = Field(min_length=1)
    activation: list[int] = Field(min_length=1)
    stage_orders: list[StageOrder] = Field(default_factory=_attention_first, min_length=1)
    width_ratios: list[float | None] = Field(default_factory=_no_width, min_length=1)
    scorer: Literal["cosine", "distill", "md", "kd", "taylor"] = "cosine"
    stage1_epochs: int = Field(2, ge=0)
    stage2_epochs: int = Field(1, ge=0)
    final_epochs: int = Field(1, ge=0)
    train: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _points_are_specs(self) -> DepthGrid:
        if self.train.get("workers", 1) != 1:
            raise ValueError(
                "train.workers: a sweep's depth points run one worker inside their trial; "
                "multi-worker runs go through orchestration.depth.train.run_depth_training"
            )
        for knobs in self.knobs(0):
            DepthSpec(**knobs)  # a bad knob or count fails here, naming itself
        return self

    def knobs(self, seed: int, where: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """`DepthSpec` arguments of every point for one seed (`where`: model, checkpoint, dataset, data_root)."""
        fixed = {
            **self.train,
            **(where or {}),
            "scorer": self.scorer,
            "stage1_epochs": self.stage1_epochs,
            "stage2_epochs": self.stage2_epochs,
            "final_epochs": self.final_epochs,
            "seed": seed,
        }
        grid = itertools.product(self.attention, self.activation, self.stage_orders, self.width_ratios)
        return [
            {**fixed, "attention": a, "activation": v, "stage_order": order, "width_ratio": width}
            for a, v, order, width in grid
            if a or v  # the dense model is the frontier's reference line, not a point
        ]


def depth_jobs(
    grid: DepthGrid, seeds: list[int], where: Mapping[str, Any], common: Mapping[str, Any]
) -> list[dict]:
    """Structured-grid jobs (plain dicts) of every point and seed: `common` holds `out` and `speed`."""
    return [
        {**common, "model": where["model"], "depth": k} for seed in seeds for k in grid.knobs(seed, where)
    ]


def depth_job_key(job: Mapping[str, Any]) -> tuple[Any, ...]:
    return DepthSpec(**job["depth"]).run_key, job["model"]


def run_depth_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """Run (or continue) the point's two-stage run, then its row with measured speed."""
    from ovit_ray.training.depth.result import depth_row
    from ovit_ray.training.depth.run import run_depth
    from ovit_ray.training.gradual import LocalReporter
    from ovit_ray.training.structured import SpeedSettings

    spec = DepthSpec(**job["depth"])
    reporter = LocalReporter(Path(job["out"]) / RUNS_FOLDER / spec.run_key)
    summary = run_depth(spec, reporter)
    return depth_row(spec, summary, SpeedSettings(**job["speed"]))
