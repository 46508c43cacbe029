"""`transfer`: pruned models (and their dense source, the reference) fine-tuned with a new head on downstream
data, `sparse` (masks kept through every step) or `dense` (masks dropped), epoch picked on val, top-1 on test.

A trial transfers one source checkpoint (`checkpoint`; none: the dense source model) in one mode with one
seed. The section's `sources` names where the checkpoints come from, and becomes a grid over `checkpoint`:
`{sweep: NAME}` (the kept models of a sibling sweep folder, e.g. the one made by the sources file run before
it), `{path: FOLDER}` (any output folder) or `{files: [...]}`; `methods` keeps some source methods only.
Every source is told apart by its checkpoint, so two trials' sources never share a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ovit_ray.knobs import knob, one_line
from ovit_ray.orchestration.kinds._registry import register_kind
from ovit_ray.orchestration.kinds.base import ExperimentKind, Host
from ovit_ray.orchestration.specs.search_space import Dist
from ovit_ray.pruning.settings import MAX_COUNT
from ovit_ray.training.spec import MAX_EPOCHS, DataKnobs

RESULTS_FILE = "results.parquet"  # `orchestration.results.RESULTS_FILE`, which a test keeps equal


class TransferKindSpec(DataKnobs):
    """One transfer run: `model` and `checkpoint` are the source, `dataset` the downstream data."""

    mode: Literal["sparse", "dense"] = knob("sparse", "keep the source's masks (sparse) or drop them (dense)")
    epochs: int = knob(10, "fine-tune epochs on the downstream data", label="ep", gt=0, le=MAX_EPOCHS)
    lr: float = knob(1e-3, "peak learning rate (cosine with warmup)", log=True, gt=0)
    lr_min: float = knob(1e-5, "lowest learning rate", log=True, ge=0)
    warmup_epochs: int = knob(1, "linear warmup epochs", label="warm", ge=0, le=MAX_EPOCHS)
    batch_size: int = knob(64, "training batch size", label="bs", gt=0, le=MAX_COUNT)
    eval_batch_size: int = knob(256, "evaluation batch size", gt=0, le=MAX_COUNT)
    weight_decay: float = knob(0.05, "AdamW weight decay", label="wd", ge=0)
    label_smoothing: float = knob(0.1, "label smoothing of the loss", label="ls", ge=0, lt=1)
    augment: Literal["none", "light", "deit"] = knob("light", "training augmentation", label="aug")
    max_steps_per_epoch: int | None = knob(None, "cap on optimizer steps per epoch", gt=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _downstream(self) -> TransferKindSpec:
        if self.dataset is None:
            raise ValueError("dataset: the downstream dataset to transfer to is required")
        return self


class TransferResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source_method: str | None = None
    source_trial: str | None = None
    source_top1: float | None = None
    final_sparsity: float | None = None
    num_classes: int | None = None
    train_images: int | None = None
    seconds: float | None = None


class Sources(BaseModel):
    """Where a transfer sweep's source checkpoints come from (exactly one of sweep, path, files)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sweep: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # a sibling output folder
    path: str | None = None
    files: list[str] | None = Field(None, min_length=1)
    methods: list[str] | None = None
    models: list[str] | None = None  # sources of these models only (a folder may hold several)
    dense: bool = True  # the dense source model too, the reference

    @model_validator(mode="after")
    def _one(self) -> Sources:
        if sum(x is not None for x in (self.sweep, self.path, self.files)) != 1:
            raise ValueError("give exactly one of sweep, path, files")
        return self


def kept_sources(folder: Path, methods: list[str] | None, models: list[str] | None = None) -> list[str]:
    """The kept models a results folder lists (relative paths resolved), of `methods` and `models` only.
    Read with pyarrow itself: `orchestration.results` (its reader and `RESULTS_FILE`) builds on the kinds."""
    import pyarrow.parquet as pq

    if not (folder / RESULTS_FILE).is_file():
        raise ValueError(
            f"sources: {folder} has no {RESULTS_FILE} yet (run the sweep that makes the sources first)"
        )
    found = []
    for row in pq.read_table(folder / RESULTS_FILE).to_pylist():
        kept = row.get("kept_model")
        if (
            kept
            and (methods is None or row.get("method") in methods)
            and (models is None or row.get("model") in models)
        ):
            found.append(kept if "://" in kept or Path(kept).is_absolute() else str(folder / kept))
    if not found:
        raise ValueError(
            f"sources: no kept model in {folder / RESULTS_FILE}"
            + (f" for methods {methods}" if methods else "")
        )
    return found


@register_kind
class Transfer(ExperimentKind):
    name = "transfer"
    summary = "transfer of pruned models to downstream data, sparse or dense fine-tuning"
    spec = TransferKindSpec
    result = TransferResult
    targets_knob = None

    def expand(
        self, section: Mapping[str, Any], out_parent: Path | None
    ) -> tuple[dict[str, Any], dict[str, Dist]]:
        """`sources` as a grid over `checkpoint` (None: the dense source)."""
        section = dict(section)
        if "sources" not in section:
            return section, {}
        try:
            sources = Sources.model_validate(section.pop("sources"))
        except ValidationError as err:  # named from the section: `transfer.sources: ...`
            raise ValueError(f"sources: {one_line(err)}") from None
        if sources.files is not None:
            found = list(sources.files)
        else:
            folder = (
                Path(sources.path)
                if sources.path
                else (out_parent or Path("runs/sweeps")) / str(sources.sweep)
            )
            found = kept_sources(folder, sources.methods, sources.models)
        return section, {"checkpoint": Dist(grid=[*found, *([None] if sources.dense else [])])}

    def same_run(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """The dense source has no masks to keep: its sparse mode is its dense mode."""
        return {**point, "mode": "dense"} if point.get("checkpoint") is None else dict(point)

    def targets(self, spec: Any) -> list[float]:
        return [0.0]

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.models import load_checkpoint
        from ovit_ray.training.kept import local_file
        from ovit_ray.training.result import TargetResult
        from ovit_ray.training.transfer import TransferSpec, run_transfer

        checkpoint = spec.checkpoint
        with local_file(checkpoint) if checkpoint else nullcontext() as local:
            meta = load_checkpoint(local)[2] if local else {}
            fields = spec.model_dump(exclude={"model", "checkpoint"})  # the rest are `TransferSpec`'s fields
            source_model = str(meta.get("model") or spec.model)  # a pruned source names its architecture
            row = run_transfer(TransferSpec(source_model=source_model, checkpoint=local, **fields))
        host.target(
            TargetResult(
                target=float(meta.get("target", 0.0)),
                top1=row["top1"],
                val_top1=row["val_top1"],
                achieved_sparsity=row["achieved_sparsity"],
                epochs_trained=row["epochs"],
                best_epoch=row["best_epoch"],
                cpu_hours=row["cpu_hours"],
                gpu_hours=row["gpu_hours"],
                extra={
                    "source_method": meta.get("method", "dense" if checkpoint is None else None),
                    "source_trial": meta.get("trial"),
                    **{
                        k: row.get(k)
                        for k in ("source_top1", "final_sparsity", "num_classes", "train_images", "seconds")
                    },
                },
            )
        )
