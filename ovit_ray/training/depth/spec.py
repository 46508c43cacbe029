"""The spec of one BoundaryDPT run (issue 16): a `TrainSpec`'s model, data and optimisation knobs plus the depth
plan (how many attention sublayers to drop and activations to linearise, chosen by which scorer), the two
stages' epochs and order, and BoundaryDPT+'s width-pruning step.

Its epochs form phases: "attention" (drop, then fine-tune with KD), "activation" (anneal a: 1 -> 0 per
optimizer step, with KD) in `stage_order`, then "width" (OPTIN search + shrink on the depth-pruned model, then
a final KD fine-tune) when `width_ratio` is set. Linearised MLPs are merged once the last edit is made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ovit_ray.knobs import knob
from ovit_ray.training.spec import MAX_EPOCHS, TrainSpec

PHASES = ("attention", "activation", "width")
StageOrder = Literal["attention-first", "activation-first"]
DepthScorer = Literal["cosine", "distill", "md", "kd", "taylor"]


class DepthSpec(TrainSpec):
    """One two-stage depth-pruning run. KD from the dense teacher is on by default (`distill_weight` 1: the
    fine-tunes recover towards the teacher only)."""

    attention: int = knob(1, "attention sublayers dropped", label="attn", ge=0, le=10_000)
    activation: int = knob(1, "MLP activations linearised, then merged", label="act", ge=0, le=10_000)
    scorer: DepthScorer = knob("cosine", "which blocks to edit: the depth scorer")
    calib_size: int = knob(32, "calibration images (drawn with the seed) for all scores", gt=0, le=4096)
    stage_order: StageOrder = knob("attention-first", "which stage runs first", label="order")
    stage1_epochs: int = knob(
        2, "epochs of the attention stage (recovers slowly: longer)", label="e1", ge=0, le=MAX_EPOCHS
    )
    stage2_epochs: int = knob(
        1, "epochs of the activation stage (anneal, recovers fast)", label="e2", ge=0, le=MAX_EPOCHS
    )
    width_ratio: float | None = knob(
        None, "BoundaryDPT+: OPTIN to this ratio of the depth-pruned MACs", label="width", gt=0, le=1
    )
    final_epochs: int = knob(1, "KD fine-tune epochs after the width step", label="e3", ge=0, le=MAX_EPOCHS)
    distill_weight: float = knob(
        1.0, "weight of distillation from the dense model (0: off)", label="kd", ge=0, le=1
    )
    lr_schedule: Literal["cyclic_linear", "cosine", "constant"] = knob(
        "cosine", "learning-rate schedule of each stage", label="sched"
    )

    def unused(self) -> set[str]:
        return super().unused() | (set() if self.width_ratio is not None else {"final_epochs"})

    @model_validator(mode="after")
    def _depth_consistent(self) -> DepthSpec:
        if self.total_epochs == 0:
            raise ValueError("a depth run needs an epoch: stage1_epochs + stage2_epochs (+ final_epochs)")
        if self.attention == 0 and self.activation == 0:
            raise ValueError("attention, activation: a depth run removes something, got 0 and 0")
        return self

    def phases(self) -> list[tuple[str, int]]:
        """(phase, epochs) in run order."""
        stages = [("attention", self.stage1_epochs), ("activation", self.stage2_epochs)]
        if self.stage_order == "activation-first":
            stages.reverse()
        return stages + ([("width", self.final_epochs)] if self.width_ratio is not None else [])

    def phase_starts(self) -> list[tuple[str, int, int]]:
        """(phase, first epoch, end epoch) in run order."""
        out, epoch = [], 0
        for name, epochs in self.phases():
            out.append((name, epoch, epoch + epochs))
            epoch += epochs
        return out

    @property
    def total_epochs(self) -> int:
        return sum(epochs for _, epochs in self.phases())

    @property
    def run_key(self) -> str:
        """What tells two depth runs on one model apart (names its folder, its kept model and its row)."""
        width = f"-w{self.width_ratio:.3f}e{self.final_epochs}" if self.width_ratio is not None else ""
        order = "af" if self.stage_order == "attention-first" else "vf"
        return (
            f"boundarydpt-a{self.attention}v{self.activation}-{self.scorer}-{order}"
            f"-e{self.stage1_epochs}.{self.stage2_epochs}{width}-seed{self.seed}"
        )
