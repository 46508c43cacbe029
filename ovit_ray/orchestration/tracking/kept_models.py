"""The best checkpoint of every target, attached to the MLflow run that produced it.

Rows (Parquet) name each best checkpoint by its place in the run's persistent storage; the MLflow
run gets the same place as a `best_checkpoint.<target>` tag and, when the storage is a local (or
shared, mounted) disk, the file itself as an artifact under `best/`. Remote storage (s3://, gs://)
keeps only the reference: MLflow would otherwise download and re-upload every model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ovit_ray.orchestration.tracking.client import Tracker


def log_best_checkpoints(tracker: Tracker, run_id: str, best: Iterable[tuple[float, str | None]]) -> None:
    """`best`: (target sparsity, checkpoint path or URI) per target."""
    pairs = [(target, path) for target, path in best if path]
    tracker.set_tags(run_id, {f"best_checkpoint.{target:.4f}": path for target, path in pairs})
    for target, path in pairs:
        if "://" not in path and Path(path).is_file():
            tracker.log_artifact(run_id, path, f"best/target_{target:.4f}")
