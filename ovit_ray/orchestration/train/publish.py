"""`ovit-ray export --register NAME`: the exported files as an MLflow model of the run that made them,
registered in the Model Registry (`tracking.models.log_model` / `register`).

The run is the sweep trial's run (tags `ovit.sweep` and `ovit.trial_id`) in the folder's own store; a model
with no run there (a store without the folder's runs) gets a run of its own in the `exports` experiment,
found again by its key on a second export.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.stores import check_own_database, default_tracking_uri
from ovit_ray.orchestration.tracking.card import markdown_path
from ovit_ray.orchestration.tracking.client import Tracker

EXPORT_EXPERIMENT = "exports"
# MLflow's own rules are looser; a name that also works in `models:/NAME/1` URIs and shells
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(
            f"--register: {name!r} must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


def _source_run(tracker: Tracker, card: Mapping[str, Any]) -> str | None:
    """The trial run that made the model, in any experiment of the store; None when the store has none."""
    source = card.get("source") or {}
    tags = {"ovit.trial_id": str(source.get("trial") or ""), "ovit.sweep": str(source.get("sweep") or "")}
    if not all(tags.values()) or any("'" in v for v in tags.values()):
        return None  # trial ids repeat across sweeps sharing a store: both tags name the run
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    experiments = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(experiments, where, max_results=1) if experiments else []
    return runs[0].info.run_id if runs else None


def publish(
    tracker: Tracker, run_id: str, out: str | os.PathLike, card: Mapping[str, Any], name: str | None = None
) -> tuple[str, int | None]:
    """(model URI, registered version or None) of the model `export_model` wrote to `out` (returning `card`),
    logged in run `run_id` and, with `name`, registered: what `--register` and a sweep's `register:` do."""
    from ovit_ray.orchestration.tracking.models import log_model, register

    # the model carries every file the export wrote: the formats and the Markdown card
    files = [Path(out).parent / name for name in card["files"].values()] + [markdown_path(out)]
    model_uri = log_model(tracker, run_id, files, card)
    if name is None:
        return model_uri, None
    return model_uri, int(
        register(tracker, model_uri, check_name(name), card, card.get("target"), run_id=run_id).version
    )


def register_export(
    source: str | os.PathLike,
    out: str | os.PathLike,
    card: Mapping[str, Any],
    name: str,
    mlflow_uri: str | None = None,
) -> tuple[str, str, int]:
    """(run id, model URI, registered version) of the model exported to `out`, in the run that made it (or
    an `exports` run); the store defaults to the source folder's own (`sqlite:///<source>/mlflow.db`)."""
    check_name(name)
    source = Path(source)
    uri = mlflow_uri or default_tracking_uri(source)
    check_own_database(uri, "mlflow", "--mlflow-uri")
    tracker = Tracker(source, EXPORT_EXPERIMENT, uri)
    run_id = _source_run(tracker, card)
    if run_id is None:
        what = f"{card['source'].get('trial')}@{card.get('target')}"
        run_id = tracker.start_run(f"export {what}", tags={"ovit.kind": "export"}, run_key=f"export-{what}")
        tracker.end_run(run_id)
    model_uri, version = publish(tracker, run_id, out, card, name)
    assert version is not None  # a name was given
    return tracker.store.real_id(run_id), model_uri, version
