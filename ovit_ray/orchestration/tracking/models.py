"""Exported models as MLflow models: logged as an MLflow pyfunc model (`ExportedModel`, built back from
the safetensors file and its card by `card.load_exported`) with a signature and an input example, and
registered in the Model Registry with the card's Markdown as description and the target as a tag.

Where the MLflow model goes (`log_model`): a local SQLite store keeps artifacts as `mlflow-artifacts:`
URIs under `<folder>/artifacts/` (`tracking.store`), which only a tracking server resolves; so the model
folder is copied there (as `Store.log_artifact` does) and the model is named by that folder's path, which
`mlflow.pyfunc.load_model` and the registry read directly, with or without `ovit-ray mlflow-server --dir`.
Through a server (`http(s)://`), MLflow uploads it and the model is `runs:/<run>/<folder>`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from ovit_ray.orchestration.tracking.card import load_exported
from ovit_ray.orchestration.tracking.card_markdown import card_markdown
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.store import PROXIED, Store

MODEL_FOLDER = "model"  # the MLflow model's artifact folder in its run (model-2, ... when taken)
EXAMPLE_IMAGES = 4
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# MLflow's "models from code": loading runs this file instead of unpickling a Python object
MODEL_CODE = """\
import mlflow.models

from ovit_ray.orchestration.tracking.models import ExportedModel

mlflow.models.set_model(ExportedModel())
"""


class ExportedModel(PythonModel):
    """The MLflow face of an exported model: float32 images (N, C, H, W), preprocessed as its card says,
    in; logits (N, classes) out. Built from the logged safetensors file and card."""

    def load_context(self, context: Any) -> None:
        self.model, _, _ = load_exported(context.artifacts["weights"], context.artifacts["card"])

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.inference_mode():
            return self.model(images).numpy()


def example_images(card: Mapping[str, Any], count: int = EXAMPLE_IMAGES) -> np.ndarray:
    """The first `count` test images of the card's dataset, as the model takes them."""
    from ovit_ray.training.setup import job_data

    data = job_data(
        card["model"],
        dataset=card["dataset"],
        data_root=card.get("data_root"),
        split_seed=card.get("split_seed", 0),
    )
    return np.stack([data.test[i][0].numpy() for i in range(count)]).astype(np.float32)


def _signature(example: np.ndarray, num_classes: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def _requirements() -> list[str]:
    from ovit_ray import __version__

    pinned = [f"{name}=={metadata.version(name).split('+')[0]}" for name in ("torch", "timm", "safetensors")]
    return [*pinned, "numpy", f"ovit-ray=={__version__}"]


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's progress bars and notes while it saves and copies the model stay off the console."""
    logger = logging.getLogger("mlflow")
    level, bars = logger.level, os.environ.get(PROGRESS_BAR)
    os.environ[PROGRESS_BAR] = "false"
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)
        if bars is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bars


def _store(tracker_or_client: Tracker | MlflowClient) -> Store:
    if isinstance(tracker_or_client, Tracker):
        return tracker_or_client.store
    uri = tracker_or_client.tracking_uri
    return Store(uri, "", Path.cwd(), remote=uri.startswith(("http://", "https://")))


def _upload(store: Store, run_id: str, local: Path) -> str:
    """Put the model folder in the run's artifacts under a free name; the URI that loads it."""
    artifact_uri = store.client.get_run(run_id).info.artifact_uri
    if not store.remote and artifact_uri.startswith(PROXIED):
        base = store.artifacts_root / artifact_uri.removeprefix(PROXIED).lstrip("/")
        taken = {p.name for p in base.iterdir()} if base.is_dir() else set()
    else:
        base = None
        taken = {Path(a.path).name for a in store.client.list_artifacts(run_id)}
    name = next(
        n for n in (MODEL_FOLDER, *(f"{MODEL_FOLDER}-{i}" for i in range(2, 10_000))) if n not in taken
    )
    staged = local.rename(local.with_name(name))
    if base is not None:
        store.log_artifact(run_id, staged, None)  # copied into the local artifacts folder
        return str(base / name)
    store.client.log_artifacts(run_id, str(staged), name)
    return f"runs:/{run_id}/{name}"


def log_model(
    tracker_or_client: Tracker | MlflowClient,
    run_id: str,
    exported_files: Sequence[str | os.PathLike],
    card: Mapping[str, Any],
    *,
    example: np.ndarray | None = None,
) -> str:
    """Log the exported model (`exported_files`: its `.safetensors`, and any `.onnx`, `.pt2`, `.md` beside it)
    as an MLflow pyfunc model of run `run_id`; returns the model URI to load or register. `example`
    defaults to the first test images of the card's dataset."""
    store = _store(tracker_or_client)
    run_id = store.real_id(run_id)
    files = {Path(f).suffix.lstrip("."): Path(f) for f in exported_files}
    if "safetensors" not in files:
        raise ValueError(
            f"log_model needs the exported .safetensors file, got {sorted(map(str, files.values()))}"
        )
    example = example_images(card) if example is None else example
    with tempfile.TemporaryDirectory(prefix="ovit-mlflow-") as tmp, _quiet_mlflow():
        card_file, code = Path(tmp) / "card.json", Path(tmp) / "exported_model.py"
        card_file.write_text(json.dumps(card, indent=1, default=str))
        code.write_text(MODEL_CODE)
        extra = {fmt: str(path) for fmt, path in files.items() if fmt in ("onnx", "pt2", "md")}
        local = Path(tmp) / "staging" / "model"
        local.parent.mkdir()
        mlflow.pyfunc.save_model(
            str(local),
            python_model=str(code),
            artifacts={"weights": str(files["safetensors"]), "card": str(card_file), **extra},
            signature=_signature(example, int(card["timm_kwargs"]["num_classes"])),
            input_example=example,
            pip_requirements=_requirements(),
            metadata={"ovit_ray": {k: card.get(k) for k in ("model", "dataset", "method", "target", "top1")}},
        )
        return _upload(store, run_id, local)


def register(
    tracker_or_client: Tracker | MlflowClient,
    model_uri: str,
    name: str,
    card: Mapping[str, Any],
    target: float | str | None,
    *,
    run_id: str | None = None,
) -> ModelVersion:
    """A new version of registered model `name` from `model_uri` (what `log_model` returned), described
    by the card's Markdown, tagged `target` (a sparsity, a budget, or "final")."""
    store = _store(tracker_or_client)
    description = card_markdown(card)
    try:
        store.client.create_registered_model(name, description=description)
    except MlflowException as err:
        if err.error_code == "INVALID_PARAMETER_VALUE":
            raise ValueError(f"--register: {name!r} is not a model registry name: {err.message}") from None
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        store.client.update_registered_model(name, description=description)
    tags = {"target": "final" if target is None else str(target), "dataset": str(card.get("dataset"))}
    return store.client.create_model_version(
        name, model_uri, run_id=store.real_id(run_id) if run_id else None, tags=tags, description=description
    )
