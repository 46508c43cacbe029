"""`ovit-ray export --register NAME`: the exported model logged as an MLflow pyfunc model (signature, input
example, no pickled Python object) in the folder's own store or through `ovit-ray mlflow-server --dir`, and
registered with the card as description; `mlflow.pyfunc.load_model("models:/NAME/1")` predicts what the
PyTorch model predicts. (From a finished sweep: tests/test_kept_models.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from kept_folders import build_kept_folder
from mlflow import MlflowClient

from ovit_ray.cli.main import main
from ovit_ray.orchestration.tracking.card import load_exported
from ovit_ray.orchestration.tracking.server import MlflowServer
from ovit_ray.orchestration.train.export import card_path
from ovit_ray.training.preset import preset_dataset


@pytest.fixture(scope="module")
def kept(digits_preset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kept-registry")
    build_kept_folder(out, digits_preset)
    return out


def _images(count: int = 16) -> np.ndarray:
    test = preset_dataset("digits-vit").test
    return torch.stack([test[i][0] for i in range(count)]).numpy()


def _registered_predicts_like_pytorch(
    uri: str, name: str, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/1")
    images = _images()
    model, card, _ = load_exported(exported)
    with torch.inference_mode():
        expected = model(torch.from_numpy(images)).numpy()
    got = loaded.predict(images)
    assert got.shape == (16, 10) and np.abs(got - expected).max() < 1e-5
    signature = loaded.metadata.signature
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 16, 16]
    assert list(signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 10]
    version = MlflowClient(uri).get_model_version(name, "1")
    assert version.tags["target"] == str(card.model_dump()["target"]) and version.tags["dataset"] == "digits"
    assert version.description.startswith("# ") and f"{100 * card.top1:.2f}%" in version.description


@pytest.mark.slow
def test_export_registers_in_the_folders_own_store(
    kept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(kept, folder)
    out = tmp_path / "optin.safetensors"
    argv = [
        "export",
        str(folder),
        "--trial",
        "optin",
        "--out",
        str(out),
        "--format",
        "onnx",
        "--register",
        "digits-optin",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "registered models:/digits-optin/1" in printed.out and "Downloading" not in printed.err
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _registered_predicts_like_pytorch(uri, "digits-optin", out, monkeypatch)
    # the model folder sits in the folder's artifacts/ (served by `mlflow-server --dir`), code not pickle
    model_dir = next((folder / "artifacts").glob("**/MLmodel")).parent
    assert sorted(p.name for p in (model_dir / "artifacts").iterdir()) == [
        "card.json",
        "optin.md",
        "optin.onnx",
        "optin.safetensors",
    ]
    assert not list(model_dir.glob("*.pkl")) and (model_dir / "input_example.json").exists()
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["flavors"]["python_function"]["model_code_path"]
    # a second export under the same name is its version 2; a bad name is one line and writes nothing
    again = tmp_path / "unstructured.safetensors"
    assert (
        main(
            [
                "export",
                str(folder),
                "--trial",
                "unstructured",
                "--out",
                str(again),
                "--register",
                "digits-optin",
            ]
        )
        == 0
    )
    assert MlflowClient(uri).get_model_version("digits-optin", "2").tags["target"] == "0.5"
    bad = tmp_path / "bad.safetensors"
    capsys.readouterr()
    assert main(["export", str(folder), "--trial", "optin", "--out", str(bad), "--register", "no/slash"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not bad.exists()


@pytest.mark.slow  # starts a real MLflow server
def test_export_registers_through_mlflow_server_on_the_folder(
    kept: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(kept, folder)
    out = tmp_path / "tome.safetensors"
    server = MlflowServer(folder).start()
    try:
        argv = ["export", str(folder), "--trial", "tome", "--out", str(out), "--register", "digits-tome"]
        assert main([*argv, "--mlflow-uri", server.url]) == 0
        _registered_predicts_like_pytorch(server.url, "digits-tome", out, monkeypatch)
        card = json.loads(card_path(out).read_text())
        assert card["kinds"][-1] == "token-merged (ToMe)"
    finally:
        server.stop()
    # what the server stored lies in the folder's own artifacts/, like every other artifact of its store
    assert len(list((folder / "artifacts").glob("**/MLmodel"))) == 1
