"""`gradual`: gradual pruning through sparsity targets with recovery fine-tuning, the mission's main kind.

A trial is one run through every target (`strategy: sweep`: a fine-tune window at each, the best epoch of
each window kept) or one run per target with the same per-target budget (`independent`). Its loop
(`training.gradual`) reports every epoch, so ASHA can stop a trial early; each window's end reports its
target, so a stopped trial keeps the targets it finished.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from ovit_ray.knobs import knob
from ovit_ray.orchestration.kinds._registry import register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host
from ovit_ray.orchestration.kinds.measured import checkpoint_problems
from ovit_ray.training.spec import RunSpec, Schedule

STRATEGIES = ("sweep", "independent")


class GradualSpec(RunSpec):
    """One trial: a `RunSpec` and how its targets are reached."""

    strategy: Literal["sweep", "independent"] = knob(
        "sweep", "one run through every target (sweep) or one run per target (independent)", label="strat"
    )

    @model_validator(mode="after")
    def _independent_needs_targets(self) -> GradualSpec:
        if self.strategy == "independent" and not self.targets:
            raise ValueError("strategy: independent runs one run per target, but targets is empty")
        return self

    def schedules(self) -> list[Schedule]:
        """The runs of a trial: one through every target, or one per target."""
        if self.strategy == "sweep":
            return [self.schedule()]
        return [self.independent_schedule(i) for i in range(len(self.targets or []))]


@register_kind
class Gradual(ExperimentKind):
    name = "gradual"
    summary = "gradual pruning through sparsity targets with recovery fine-tuning (Ray Train)"
    spec = GradualSpec
    reports_epochs = True

    def problems(self, spec: Any) -> list[str]:
        return checkpoint_problems(spec)

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.gradual.run import train_loop

        for index, schedule in enumerate(spec.schedules()):
            host.train(
                train_loop, {"spec": spec, "schedule": schedule}, spec, schedule.total_epochs, f"run{index}"
            )

    def targets(self, spec: Any) -> list[float]:
        return [target for target, _, _ in spec.schedule().windows]
