"""`depth`: BoundaryDPT depth pruning (our reconstruction): attention sublayers dropped and MLP activations
linearised then merged, in two fine-tuned stages with KD from the dense model, optionally followed by
BoundaryDPT+'s OPTIN width step; one result per trial, timed against the dense model like `structured`.

The run is `training.depth` on one worker in the trial or on Ray Train workers (DDP, resume after a dead
worker); it reports every epoch, so ASHA can stop a trial early. Supported family: timm VisionTransformer.
"""

from __future__ import annotations

from typing import Any

from ovit_ray.orchestration.kinds._registry import register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host
from ovit_ray.orchestration.kinds.measured import (
    MeasuredResult,
    SpeedKnobs,
    architecture,
    checkpoint_problems,
    measured_target,
    vit_problems,
)
from ovit_ray.training.depth.spec import DepthSpec


class DepthKindSpec(DepthSpec, SpeedKnobs):
    """One BoundaryDPT run and how its final model is timed."""


class DepthResult(MeasuredResult):
    attn_dropped: int | None = None
    act_linearised: int | None = None
    mlps_merged: int | None = None
    top1_after_removal: float | None = None
    top1_linearised: float | None = None


@register_kind
class Depth(ExperimentKind):
    name = "depth"
    summary = "BoundaryDPT(+) depth pruning in two fine-tuned stages, measured speed-up"
    spec = DepthKindSpec
    result = DepthResult
    target_name = "result"
    targets_knob = None
    reports_epochs = True

    def problems(self, spec: Any) -> list[str]:
        family = vit_problems(spec.model)
        if family:
            return family
        blocks = len(getattr(architecture(spec.model), "blocks", []))
        return [
            f"{name}: removes {count} of the model's {blocks} blocks; at most {blocks}"
            for name, count in (("attention", spec.attention), ("activation", spec.activation))
            if count > blocks
        ] or checkpoint_problems(spec)

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.depth.result import depth_row
        from ovit_ray.training.depth.run import train_loop
        from ovit_ray.training.kept import local_file

        summary = host.train(train_loop, {"spec": spec}, spec, spec.total_epochs, "run0")
        kept = summary["best"]["checkpoint"]
        with local_file(kept) as local:
            row = depth_row(spec, {**summary, "best": {**summary["best"], "checkpoint": local}}, spec.speed())
        host.target(
            measured_target(
                row,
                DepthResult,
                target=None,
                kept_model=kept,
                epochs_trained=summary["total_epochs"],
                best_epoch=row["best_epoch"],
                cpu_hours=summary["cpu_hours"],
                gpu_hours=summary["gpu_hours"],
            )
        )
