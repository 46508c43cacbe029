"""`structured`: heads and MLP neurons removed under MACs (or latency) budgets, the model shrunk and timed.

A trial scores the units once (OPTIN, or a baseline that shares OPTIN's search, shrink and budgets: group
magnitude, first-order Taylor, random), then for each budget (its targets, from the largest kept share to
the smallest) searches the kept units, shrinks the model, measures test top-1 and the speed-up against the
dense model in one interleaved loop, optionally prunes the shrunk model further (`then_method`), and keeps
the model. Supported family: timm VisionTransformer (`pruning.structured.units.check_vit`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from ovit_ray.knobs import Choices, knob
from ovit_ray.orchestration.kinds._registry import register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host
from ovit_ray.orchestration.kinds.measured import (
    MeasuredResult,
    SpeedKnobs,
    count_problems,
    measured_target,
    vit_problems,
)
from ovit_ray.pruning.names import STRUCTURED_METHODS
from ovit_ray.pruning.settings import MAX_COUNT, MethodName, PatternText
from ovit_ray.training.spec import DataKnobs

Budget = Annotated[float, Field(gt=0, le=1)]


def _structured_method(name: str) -> str:
    if name not in STRUCTURED_METHODS:
        raise ValueError(f"must be one of {', '.join(STRUCTURED_METHODS)}")
    return name


class StructuredSpec(DataKnobs, SpeedKnobs):
    """One trial: a scorer, its budgets and how the kept model is made and timed."""

    method: Annotated[str, Choices(lambda: STRUCTURED_METHODS), AfterValidator(_structured_method)] = knob(
        "optin", "structured scorer of heads and MLP neurons"
    )
    budgets: list[Budget] = knob(
        [0.9, 0.7, 0.5],
        "kept share of the dense model's MACs (or latency), one result each",
        min_length=1,
        max_length=100,
    )
    budget_kind: Literal["macs", "latency"] = knob(
        "macs", "what a budget is a share of: analytic MACs or measured batch-1 latency", label="by"
    )
    token_share: float = knob(
        0.0, "share of the MAC reduction taken by merging tokens (ToMe)", label="tok", ge=0, le=0.85
    )
    round_to: Literal[1, 8, 32] = knob(1, "kept MLP widths are multiples of this", label="round")
    recover: Literal["none", "lsq"] = knob(
        "none", "least-squares rescaling of the kept units (lsq), or none", label="rec"
    )
    calib_size: int = knob(32, "calibration images (labelled for taylor)", label="calib", gt=0, le=4096)
    lam: float = knob(100.0, "OPTIN: KD gets about 1/lam of the manifold-distillation weight", gt=0)
    temperature: float = knob(4.0, "OPTIN: distillation temperature", label="T", gt=0)
    gram_tokens: int = knob(768, "OPTIN: tokens in each Gram matrix", ge=2, le=MAX_COUNT)
    then_method: MethodName | None = knob(
        None, "unstructured pruning of the shrunk model afterwards (e.g. ovit)", label="then"
    )
    then_sparsity: float | None = knob(None, "its sparsity", label="then_s", gt=0, lt=1)
    then_pattern: PatternText | None = knob(None, "its N:M pattern instead of a sparsity, e.g. 2:4")
    block_size: int = knob(64, "Fisher block size B of the unstructured step", label="B", gt=0, le=MAX_COUNT)
    num_grads: int = knob(64, "gradients m of the unstructured step", label="m", gt=0, le=MAX_COUNT)
    eval_batch_size: int = knob(256, "evaluation batch size", gt=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _consistent(self) -> StructuredSpec:
        if self.recover == "lsq" and self.token_share:
            raise ValueError(
                f"recover: lsq does not rescale token-merging models, got token_share {self.token_share}"
            )
        if self.then_method is not None and (self.then_sparsity is None) == (self.then_pattern is None):
            raise ValueError("then_sparsity, then_pattern: the unstructured step needs exactly one of them")
        if self.then_method is None and (self.then_sparsity is not None or self.then_pattern is not None):
            raise ValueError("then_method: a then_sparsity or then_pattern needs the method that applies it")
        if self.budget_kind == "latency" and self.token_share:
            raise ValueError("token_share: latency budgets do not merge tokens")
        return self

    def unused(self) -> set[str]:
        unused = super().unused() | (
            set() if self.method == "optin" else {"lam", "temperature", "gram_tokens"}
        )
        if self.then_method is None:
            unused |= {"block_size", "num_grads"}
        return unused


class StructuredResult(MeasuredResult):
    """The columns a structured row adds to the shared and measured ones."""

    estimated_latency_ratio: float | None = None
    achieved_token_share: float | None = None
    merge_r: list[int] | None = None
    gmacs_sparse: float | None = None
    top1_masked: float | None = None
    score_seconds: float | None = None
    scores_cached: bool | None = None


@register_kind
class Structured(ExperimentKind):
    name = "structured"
    summary = "OPTIN (or baseline) head and neuron pruning under MACs budgets, measured speed-up"
    spec = StructuredSpec
    result = StructuredResult
    target_name = "macs"
    targets_knob = "budgets"

    def targets(self, spec: Any) -> list[float]:
        return sorted(spec.budgets, reverse=True)

    def problems(self, spec: Any) -> list[str]:
        then = [spec.then_sparsity] if spec.then_sparsity is not None else []
        return vit_problems(spec.model) or count_problems(spec, then, spec.calib_size)

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.models import PRESETS
        from ovit_ray.pruning import PruneSettings
        from ovit_ray.pruning.structured import OptinSettings
        from ovit_ray.training.setup import job_start
        from ovit_ray.training.structured import StructuredJob, structured_rows

        start = job_start(spec)
        then = None
        if spec.then_method is not None:
            then = PruneSettings(
                method=spec.then_method,
                block_size=spec.block_size,
                num_grads=spec.num_grads,
                pattern=spec.then_pattern,
            )
        optin = OptinSettings(lam=spec.lam, temperature=spec.temperature, gram_tokens=spec.gram_tokens)
        latency = spec.budget_kind == "latency"
        preset = PRESETS.get(spec.model)
        identity = {
            "dataset": spec.dataset or (preset.dataset if preset else "digits"),
            "split_seed": spec.split_seed,
        }
        speed = spec.speed()
        with tempfile.TemporaryDirectory(prefix="ovit-structured-") as folder:
            for budget in self.targets(spec):
                host.progress(f"budget {budget:g}: scoring, shrinking, timing")
                job = StructuredJob(
                    method=spec.method,
                    flops_ratio=1.0 if latency else budget,
                    latency_ratio=budget if latency else None,
                    recover=spec.recover,
                    token_share=spec.token_share,
                    round_to=spec.round_to,
                    calib_size=spec.calib_size,
                    seed=spec.seed,
                    optin=optin,
                    then=then,
                    then_sparsity=spec.then_sparsity,
                )
                (row,) = structured_rows(
                    start,
                    [job],
                    Path(folder),
                    model_name=spec.model,
                    identity=identity,
                    speed=speed,
                    eval_batch_size=spec.eval_batch_size,
                    progress=False,
                )
                kept = host.keep(row["checkpoint"])
                host.target(measured_target(row, StructuredResult, target=budget, kept_model=kept))
