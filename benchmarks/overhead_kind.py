"""A benchmark's experiment kind whose trial does nothing but report one result at once: the time from the
driver starting its trial to that report is the driver's own per-trial overhead (`bench_sweep_overhead.py`).
Registered on import, like any plug-in kind; Ray ships it to trials by value (`tune.driver`)."""

from __future__ import annotations

from typing import Any

from ovit_ray.knobs import Knobs, knob
from ovit_ray.orchestration.kinds import ExperimentKind, Host, register_kind

NAME = "bench_noop"


class NoopSpec(Knobs):
    seed: int = knob(0, "tells the trials apart (a grid over seeds makes them)", ge=0)


@register_kind
class Noop(ExperimentKind):
    name = NAME
    summary = "benchmark kind: one result at once, no work (the driver's per-trial overhead)"
    spec = NoopSpec
    target_name = "step"
    targets_knob = None

    def targets(self, spec: Any) -> list[float]:
        return [1.0]

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.result import TargetResult

        host.target(TargetResult(target=1.0, top1=0.0, val_top1=0.0))
