"""What an experiment kind is: its typed trial spec, how one trial runs, and the result columns it adds.

The driver (`orchestration.tune`) knows nothing of pruning: it validates a sweep file's kind section against
`spec`, searches the spec's knobs, runs `run(spec, host)` once per trial, and turns every `TargetResult` the
trial reports into a Parquet row, an MLflow point and a line of the display. Torch and Ray appear only in
annotations here and inside `run`, so `--help` and `--dry-run` can read the registry without them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from ovit_ray.knobs import Knobs
from ovit_ray.orchestration.specs.search_space import Dist

if TYPE_CHECKING:
    from ovit_ray.training.gradual import Reporter
    from ovit_ray.training.result import TargetResult
    from ovit_ray.training.spec import TrainSpec

__all__ = ["ExperimentKind", "Host", "NoExtra", "TrainLoop"]

# A Ray-free training loop run on every worker: (its config, its host's reporter) -> rank 0's summary.
TrainLoop = Callable[[Mapping[str, Any], "Reporter"], dict[str, Any]]


class NoExtra(BaseModel):
    """The result model of a kind that adds no columns of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(Protocol):
    """What a trial gets from whatever runs it: a Tune trial on a cluster, or this process."""

    trial_id: str

    def train(
        self, loop: TrainLoop, config: Mapping[str, Any], spec: TrainSpec, epochs: int, run: str
    ) -> dict[str, Any]:
        """Run `loop(config, reporter)` on `spec.workers` workers (here with one, on Ray Train with more),
        continuing run `run` from its last checkpoint; rank 0's return value. A loop's report that carries
        `"target": TargetResult.payload()` delivers that target as `target()` does."""

    def target(self, result: TargetResult) -> None:
        """A finished target: written to Parquet and MLflow as soon as it arrives (a trial stopped or failed
        later keeps it)."""

    def progress(self, text: str) -> None:
        """A short status for the display while no epoch or target is reported (scoring, timing)."""

    def keep(self, path: str) -> str:
        """Copy a local file (a pruned model a target reports) into the trial's kept folder in the sweep's
        storage, which outlives Ray's session and the node; its location there (`kept_model`)."""


class ExperimentKind(ABC):
    """A kind of experiment: subclass, set the class attributes, implement `run`, decorate with
    `register_kind`. Its sweep-file section is named after it and holds its knobs' fixed values."""

    name: ClassVar[str]  # the sweep file's section, the `kind` column and tag
    summary: ClassVar[str]  # one line for `ovit-ray sweep --help` and the README's kinds table
    spec: ClassVar[type[Knobs]]  # every knob of one trial, with its type, bounds, default and help
    result: ClassVar[type[BaseModel]] = NoExtra  # the columns this kind adds to a row (`TargetResult.extra`)
    target_name: ClassVar[str] = "sparsity"  # what a row's `target` is: the MLflow series `top1_vs_<it>`
    targets_knob: ClassVar[str | None] = "targets"  # the spec's list of targets, if it has one
    reports_epochs: ClassVar[bool] = False  # reports per epoch, so ASHA can stop trials early

    @abstractmethod
    def run(self, spec: Any, host: Host) -> None:
        """Run one trial; every finished target reaches `host.target` (directly or from a loop's report)."""

    def expand(
        self, section: Mapping[str, Any], out_parent: Path | None
    ) -> tuple[dict[str, Any], dict[str, Dist]]:
        """The section's own shorthands turned into knobs (a transfer's `sources` into a grid over checkpoints);
        `out_parent` holds the sweep's sibling output folders. By default: nothing to expand."""
        return dict(section), {}

    def same_run(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """A grid point as the run it is: where a knob does not matter for some values of the others (the
        mode of a model without masks), it takes one value, so the grid runs each distinct run once."""
        return dict(point)

    def problems(self, spec: Any) -> list[str]:
        """What makes `spec` impossible for its model and data (a block count beyond the model's depth),
        found before Ray starts; may import torch and build the model on the meta device."""
        return []

    def targets(self, spec: Any) -> list[float]:
        """The targets a trial of `spec` will report, in report order (the display counts them)."""
        values = getattr(spec, self.targets_knob, None) if self.targets_knob else None
        return list(values or [])
