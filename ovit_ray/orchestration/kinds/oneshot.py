"""`oneshot`: one-shot pruning to several sparsities from one Fisher (no fine-tuning), every pruned model kept.

A trial is one method and its knobs: the Fisher is collected and the weights ranked once, then each sparsity
starts again from the dense weights. With `time_models`, each pruned model is timed against the dense one in
one interleaved loop (unstructured sparsity runs at dense speed on dense kernels: the frontier shows it).
`ovit-ray prune` runs this kind in its own process.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from ovit_ray.knobs import knob
from ovit_ray.orchestration.kinds._registry import register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host
from ovit_ray.orchestration.kinds.measured import MeasuredResult, SpeedKnobs, count_problems
from ovit_ray.pruning.settings import MAX_COUNT, PruneSettings
from ovit_ray.training.spec import DataKnobs

Sparsity = Annotated[float, Field(ge=0, lt=1)]


class OneshotSpec(DataKnobs, PruneSettings, SpeedKnobs):
    """One method's one-shot prune to every sparsity."""

    sparsities: list[Sparsity] = knob(
        [0.5, 0.8, 0.9], "target sparsities, each in [0, 1): one result each", min_length=1, max_length=100
    )
    patterns: tuple[str, ...] | None = knob(
        None,
        "regular expressions of the weight names to prune (default: every attention and MLP projection)",
        min_length=1,
        max_length=1000,
    )
    eval_batch_size: int = knob(256, "evaluation batch size", gt=0, le=MAX_COUNT)
    time_models: bool = knob(
        False, "time each pruned model against the dense one (the speed frontier)", label="timed"
    )

    @model_validator(mode="after")
    def _pattern_sparsity(self) -> OneshotSpec:
        implied = self.pattern_sparsity
        if implied is not None and any(abs(s - implied) > 1e-9 for s in self.sparsities):
            raise ValueError(
                f"sparsities: the pattern {self.pattern} implies {implied:g}, got {self.sparsities}"
            )
        return self


class OneshotResult(MeasuredResult):
    fisher_seconds: float | None = None
    plan_seconds: float | None = None
    apply_seconds: float | None = None
    prune_seconds: float | None = None
    peak_rss_mb: float | None = None
    params_total: int | None = None
    params_prunable: int | None = None


@register_kind
class Oneshot(ExperimentKind):
    name = "oneshot"
    summary = "one-shot pruning to several sparsities from one Fisher (oViT, WoodFisher, magnitude, ...)"
    spec = OneshotSpec
    result = OneshotResult
    targets_knob = "sparsities"

    def problems(self, spec: Any) -> list[str]:
        return count_problems(spec, list(spec.sparsities))

    def run(self, spec: Any, host: Host) -> None:
        import copy

        from ovit_ray.models import save_checkpoint
        from ovit_ray.pruning import MaskSet, PruneSettings
        from ovit_ray.training.oneshot import oneshot_rows
        from ovit_ray.training.result import TargetResult
        from ovit_ray.training.setup import job_start
        from ovit_ray.training.structured import speed_columns

        start = job_start(spec)
        dense = copy.deepcopy(start.model).eval() if spec.time_models else None
        settings = PruneSettings(**{k: getattr(spec, k) for k in PruneSettings.model_fields})
        meta = {
            "model": spec.model,
            "dataset": spec.dataset,
            "split_seed": spec.split_seed,
            "method": spec.method,
            "num_classes": start.data.num_classes,
            "image_size": start.data.image_size,
        }

        def deliver(row: dict[str, Any], masks: MaskSet, folder: Path) -> None:
            speed = spec.speed()
            timed = speed_columns(dense, start.model.eval(), start, speed) if dense and speed else {}
            path = save_checkpoint(
                folder / f"{spec.method}_s{row['target_sparsity']:.4f}.safetensors",
                start.model,
                masks.state_dict(),
                {**meta, "target": row["target_sparsity"]},
            )
            row = {"gmacs_dense": row["flops_dense"] / 2e9, **row, **timed}  # counted, timed or not
            host.target(
                TargetResult(
                    target=row["target_sparsity"],
                    top1=row["top1"],
                    val_top1=row["val_top1"],
                    achieved_sparsity=row["achieved_sparsity"],
                    macs_ratio=row["flops_nonzero"] / row["flops_dense"],
                    gmacs=row["flops_nonzero"] / 2e9,
                    params=row["params_nonzero"],
                    kept_model=host.keep(str(path)),
                    latency_ms=row.get("latency_ms"),
                    speedup_latency=row.get("speedup_latency"),
                    speedup_throughput=row.get("speedup_throughput"),
                    extra={k: row.get(k) for k in OneshotResult.model_fields},
                )
            )

        sparsities = [None] if spec.pattern else sorted(spec.sparsities)
        with tempfile.TemporaryDirectory(prefix="ovit-oneshot-") as folder:
            oneshot_rows(
                start,
                [settings],
                sparsities,
                param_patterns=spec.patterns,
                seed=spec.seed,
                device=spec.device,
                eval_batch_size=spec.eval_batch_size,
                progress=False,
                on_row=lambda row, masks: deliver(row, masks, Path(folder)),
            )
