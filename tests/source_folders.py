"""A sources sweep's output folder as the transfer kind reads it, without running it: a gradual
`results.parquet` (the one schema every kind writes) listing one kept model per model and method, each kept
model relative to the folder as the driver stores it. Nothing is trained; the kept files need not exist."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ovit_ray.orchestration.kinds import get_kind
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import results_schema


def kept_model(model: str, method: str) -> str:
    """Where the folder's row for `model` pruned by `method` says its kept model is (relative)."""
    return f"ray/sources/{model}-{method}/kept/target_0.5000.safetensors"


def write_sources(folder: Path, models: Sequence[str], methods: Sequence[str]) -> Path:
    """`folder/results.parquet` with one finished target per model and method; the folder."""
    rows = [
        {
            "sweep": folder.name,
            "kind": "gradual",
            "trial_id": f"{model}-{method}",
            "target": 0.5,
            "top1": 0.9,
            "model": model,
            "method": method,
            "kept_model": kept_model(model, method),
        }
        for model in models
        for method in methods
    ]
    append_rows(folder / "results.parquet", rows, ["trial_id", "target"], results_schema(get_kind("gradual")))
    return folder
