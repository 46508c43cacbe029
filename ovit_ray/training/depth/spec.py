"""The spec of one BoundaryDPT run (issue 16): a `RunSpec`'s model, data and optimisation knobs plus the depth
plan (how many attention sublayers to drop and activations to linearise, chosen by which scorer), the two
stages' epochs and order, and BoundaryDPT+'s width-pruning step.

Its epochs form phases: "attention" (drop, then fine-tune with KD), "activation" (anneal a: 1 -> 0 per
optimizer step, with KD) in `stage_order`, then "width" (OPTIN search + shrink on the depth-pruned model, then
a final KD fine-tune) when `width_ratio` is set. Linearised MLPs are merged once the last edit is made.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ovit_ray.training.spec import MAX_EPOCHS, RunSpec

PHASES = ("attention", "activation", "width")
StageOrder = Literal["attention-first", "activation-first"]


class DepthSpec(RunSpec):
    """One two-stage depth-pruning run; the pruning-schedule fields of `RunSpec` are unused. KD from the dense
    teacher is on by default (`distill_weight` 1: the fine-tunes recover towards the teacher only)."""

    attention: int = Field(1, ge=0, le=10_000)  # attention sublayers dropped
    activation: int = Field(1, ge=0, le=10_000)  # MLP activations linearised, then merged
    scorer: Literal["cosine", "distill", "md", "kd", "taylor"] = "cosine"
    calib_size: int = Field(32, gt=0, le=4096)  # calibration images (drawn with `seed`) for all scores
    stage_order: StageOrder = "attention-first"
    stage1_epochs: int = Field(2, ge=0, le=MAX_EPOCHS)  # attention stage (recovers slowly: longer)
    stage2_epochs: int = Field(1, ge=0, le=MAX_EPOCHS)  # activation stage (anneal, recovers fast)
    width_ratio: float | None = Field(None, gt=0, le=1)  # BoundaryDPT+: OPTIN to this ratio of the MACs
    final_epochs: int = Field(1, ge=0, le=MAX_EPOCHS)  # KD fine-tune after the width step
    distill_weight: float = Field(1.0, ge=0, le=1)
    lr_schedule: Literal["cyclic_linear", "cosine", "constant"] = "cosine"

    @model_validator(mode="after")
    def _depth_consistent(self) -> DepthSpec:
        if self.total_epochs == 0:
            raise ValueError("a depth run needs an epoch: stage1_epochs + stage2_epochs (+ final_epochs)")
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
