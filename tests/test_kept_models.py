"""What a sweep keeps: best checkpoints in persistent storage (after Ray and its temp folder are gone), named
relative to the output folder; the export round trip (safetensors, ONNX, torch.export, each reproducing the
recorded top-1) and the registered MLflow model; the Optuna study on disk, --add-trials, one stable best trial."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import optuna
import pytest
import timm
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from ovit_ray.cli.main import main
from ovit_ray.models import load_checkpoint
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.train.export import card_path, checkpoint_location, evaluate_exported
from ovit_ray.orchestration.tune.summary import best_per_target

ROOT = Path(__file__).resolve().parents[1]
GRADUAL = {"targets": [0.5, 0.75], "window_epochs": 1, "num_grads": 16}


def run_sweep(path: Path, out: Path, *flags: str) -> None:
    """`ovit-ray sweep PATH --out OUT FLAGS` in this process (it joins the Ray its caller started)."""
    assert main(["sweep", str(path), "--out", str(out), *flags]) == 0


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 2-trial Optuna sweep whose Ray instance (private temp folder) is shut down and deleted."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))
        tmp = tmp_path_factory.mktemp("kept")
        path = tmp / "sweep.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "name": "kept",
                    "model": "digits-vit",
                    "gradual": GRADUAL,
                    "mlflow": {"experiment": "kept"},
                    "search": {
                        "space": "quickstart",
                        "algorithm": "optuna",
                        "num_samples": 2,
                        "params": {"block_size": {"choice": [16, 32]}, "num_grads": 16},
                    },
                }
            )
        )
        ray_temp = tempfile.mkdtemp(prefix="ovk", dir="/tmp")  # short: Ray's socket paths have a length limit
        ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=ray_temp)
        try:
            run_sweep(path, tmp / "out")
            assert ray.is_initialized()  # the sweep leaves a Ray its caller started running ...
        finally:
            ray.shutdown()  # ... so the caller ends it: the session is gone before the checks below
        shutil.rmtree(ray_temp)  # only this test's own Ray temp folder
        yield path, tmp / "out"


@pytest.mark.ray
@pytest.mark.slow
def test_best_checkpoints_survive_the_ray_session(sweep_dir: tuple[Path, Path]) -> None:
    _, out = sweep_dir
    rows = read_rows(out / "results.parquet")
    assert len(rows) == 4
    for row in rows:
        assert not Path(row["kept_model"]).is_absolute()  # relative to the folder: a copy reads its own files
        path = Path(checkpoint_location(out, row["kept_model"]))
        assert path.is_relative_to(out / "ray")
        state, masks, meta = load_checkpoint(path)
        assert meta["top1"] == row["top1"] and meta["epoch"] == row["best_epoch"]
        pruned = sum(int((~m.bool()).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        assert pruned == pytest.approx(row["achieved_sparsity"], abs=1e-6)
        assert 0 < row["macs_ratio"] < 1  # counted in memory, never from a file
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    trials = [
        r
        for r in client.search_runs([client.get_experiment_by_name("kept").experiment_id])
        if r.data.tags.get("ovit.role") == "trial"
    ]
    assert sorted(t.data.tags["ovit.trial_id"] for t in trials) == sorted({r["trial_id"] for r in rows})
    # the sweep published the best model of each target: exported beside the rows, an MLflow model of its trial
    best = best_per_target(out)
    assert sorted(best) == [0.5, 0.75]
    for target, row in best.items():
        exported = out / "exported" / f"{row['trial_id']}-{target:g}.safetensors"
        card = json.loads(card_path(exported).read_text())
        assert card["source"]["trial"] == row["trial_id"] and card["top1"] == row["top1"]
    assert len(list((out / "artifacts").rglob("MLmodel"))) == 2


@pytest.mark.ray
@pytest.mark.slow
def test_export_round_trip_reproduces_top1(
    sweep_dir: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out = sweep_dir
    best = json.loads((out / "best_config.json").read_text())
    exported = tmp_path / "best.safetensors"
    assert main(["export", str(out), "--out", str(exported)]) == 0
    card = json.loads(card_path(exported).read_text())
    assert card["source"]["trial"] == best["trial_id"] and card["target_sparsity"] == 0.75
    assert (
        card["knobs"]["block_size"] in (16, 32) and card["git_commit"] and card["source"]["sweep"] == "kept"
    )
    assert card["classes"] == [str(i) for i in range(10)] and card["preprocessing"]["input_size"] == [
        3,
        16,
        16,
    ]
    assert card["test"]["images"] == 359 and card["kinds"] == ["unstructured (masks folded in)"]
    state = load_file(exported)
    assert not any(k.startswith(("model.", "mask.")) for k in state)
    model = timm.create_model(card["timm_model"], pretrained=False, **card["timm_kwargs"])
    model.load_state_dict(state, strict=True)
    result = evaluate_exported(exported)
    assert result["top1"] == card["top1"] and result["val_top1"] == card["val_top1"]  # recorded, exactly
    assert result["sparsity"] == pytest.approx(card["achieved_sparsity"], abs=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(exported)]) == 0
    assert f"test top-1 {card['top1']:.4f}" in capsys.readouterr().out
    # every other row exports too; bad input is one error line and exit 2, nothing overwritten
    for row in read_rows(out / "results.parquet"):
        target = tmp_path / f"{row['trial_id']}-{row['target']}.safetensors"
        argv = [
            "export",
            str(out),
            "--trial",
            row["trial_id"],
            "--target",
            str(row["target"]),
            "--out",
            str(target),
        ]
        assert main(argv) == 0
    before = exported.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    shutil.copy(card_path(exported), card_path(bad))
    head = tmp_path / "head.safetensors"
    state["head.weight"], state["head.bias"] = state["head.weight"][:3], state["head.bias"][:3]
    from safetensors.torch import save_file

    save_file(state, str(head))
    shutil.copy(card_path(exported), card_path(head))
    capsys.readouterr()
    for argv in (
        ["export", str(out), "--out", str(exported)],
        ["export", str(out), "--trial", "nope", "--out", str(tmp_path / "x.safetensors")],
        ["evaluate", str(bad)],
        ["evaluate", str(head)],
        ["prune", "--checkpoint", str(head), "--method", "magnitude", "--out", str(tmp_path / "p")],
    ):
        assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and "already exists" in err[0] and "'nope'" in err[1] and "does not fit" in err[3]
    assert exported.read_bytes() == before and not (tmp_path / "p").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_a_copied_sweep_exports_deployable_files_and_registers_the_best_model(
    sweep_dir: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's "done": from a copy of a finished sweep (the original out of reach), `export DIR --format
    onnx pt2 --register NAME` gives three files whose runtimes reproduce the recorded top-1 (beside the
    safetensors the sweep exported when it ended, where that was the same model), a card, and a registered
    MLflow model that predicts what the PyTorch model predicts."""
    import mlflow
    import numpy as np
    import torch

    from ovit_ray.orchestration.tracking.card import load_exported
    from ovit_ray.training.preset import preset_dataset

    _, out = sweep_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.lock"))
    away = out.with_name(out.name + "-away")
    out.rename(away)
    try:
        best = json.loads((copy / "best_config.json").read_text())["trial_id"]
        exported = copy / "exported" / f"{best}-0.75.safetensors"  # the sweep may have written it already
        argv = ["export", str(copy), "--format", "onnx", "pt2", "--register", "digits-ovit"]
        assert main(argv) == 0
        for suffix in (".safetensors", ".onnx", ".pt2"):  # the command a user runs, on each file
            assert main(["evaluate", str(exported.with_suffix(suffix))]) == 0
        assert main(["report", str(copy)]) == 0 and (copy / "plots" / "top1_vs_target.png").is_file()
    finally:
        away.rename(out)
    card = json.loads(card_path(exported).read_text())
    assert Path(card["source"]["checkpoint"]).is_relative_to(copy)
    assert sorted(p.suffix for p in exported.parent.glob(f"{exported.stem}.*")) == [
        ".json",
        ".md",
        ".onnx",
        ".pt2",
        ".safetensors",
    ]
    for suffix in (".safetensors", ".onnx", ".pt2"):
        assert evaluate_exported(exported.with_suffix(suffix))["top1"] == card["top1"], suffix
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    loaded = mlflow.pyfunc.load_model("models:/digits-ovit/1")
    test = preset_dataset("digits-vit").test
    images = torch.stack([test[i][0] for i in range(32)])
    model, _, _ = load_exported(exported)
    with torch.inference_mode():
        expected = model(images).numpy()
    assert np.abs(loaded.predict(images.numpy()) - expected).max() < 1e-5
    client = MlflowClient(uri)
    version = client.get_model_version("digits-ovit", "1")
    assert version.tags["target"] == "0.75" and "Test top-1" in version.description
    trial_run = client.get_run(version.run_id)  # logged in the run of the trial that made it
    assert trial_run.data.tags["ovit.trial_id"] == card["source"]["trial"]


@pytest.mark.ray
@pytest.mark.slow
def test_study_on_disk_add_trials_and_stable_best(sweep_dir: tuple[Path, Path]) -> None:
    path, out = sweep_dir
    state = json.loads((out / "sweep.json").read_text())
    assert state["optuna_storage"] is None  # the folder's own optuna.db, found anew after a move
    storage = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.load_study(study_name=state["study_name"], storage=storage)
    rows = read_rows(out / "results.parquet")
    assert sorted(t.user_attrs["tune_trial_id"] for t in study.trials) == sorted(
        {r["trial_id"] for r in rows}
    )
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    best_before = (out / "best_config.json").read_text()
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kept").experiment_id

    def parent_best_tags() -> dict[str, str]:
        runs = client.search_runs([experiment])
        parent = next(r for r in runs if r.data.tags.get("ovit.role") == "sweep")
        return {k: v for k, v in parent.data.tags.items() if k.startswith("best.")}

    tags_before = parent_best_tags()
    assert tags_before["best.trial_id"] == json.loads(best_before)["trial_id"]
    run_sweep(path, out, "--resume")  # nothing new: nothing may change
    assert (out / "best_config.json").read_text() == best_before and parent_best_tags() == tags_before

    run_sweep(path, out, "--add-trials", "1")
    study = optuna.load_study(study_name=state["study_name"], storage=storage)
    assert len(study.trials) == 3 and [t.number for t in study.trials] == [0, 1, 2]
    grown = read_rows(out / "results.parquet")
    assert len(grown) == 6 and grown[:4] == rows  # finished rows kept, in place
    assert len({(r["trial_id"], r["target"]) for r in grown}) == 6
    new = study.trials[2].user_attrs["tune_trial_id"]
    assert new not in {r["trial_id"] for r in rows} and {r["trial_id"] for r in grown[4:]} == {new}
    assert json.loads((out / "sweep.json").read_text())["finished"] is True


@pytest.mark.ray
@pytest.mark.slow
def test_two_nodes_with_their_own_temp_folders_keep_every_checkpoint(tmp_path: Path) -> None:
    """Trials run on `ray start` nodes whose temp (and so trial working) folders differ from the head's;
    after the cluster is stopped and both temp folders are deleted, the driver reads every best checkpoint."""
    import ray

    from ovit_ray.orchestration.cluster.local import start_head

    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "two",
                "model": "digits-vit",
                "gradual": GRADUAL,
                "search": {
                    "space": "quickstart",
                    "algorithm": "random",
                    "num_samples": 2,
                    "params": {"block_size": 32, "num_grads": 16},
                },
            }
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))
        # no CPU on the head (the driver's node): every trial runs on the other node, in its temp folder
        with start_head(tmp_path / "cluster", num_cpus=0) as cluster:
            cluster.add_node(num_cpus=2)
            temps = [node.temp_dir for node in cluster.nodes]
            with cluster.driver_env():
                ray.init(address=cluster.address)
                try:
                    run_sweep(path, tmp_path / "out", "--address", cluster.address)
                finally:
                    ray.shutdown()
            worked_in = [list(t.glob("session_*/artifacts/*/*/working_dirs/*")) for t in temps]
    assert not any(t.exists() for t in temps)  # each node's own temp folder, removed with the node
    rows = read_rows(tmp_path / "out" / "results.parquet")
    # the trials' working folders were in the other node's temp folder, now gone; the driver still reads
    # every best checkpoint from the storage path
    assert len(rows) == 4 and worked_in[1] and not worked_in[0], worked_in
    for row in rows:
        path = Path(checkpoint_location(tmp_path / "out", row["kept_model"]))
        assert path.is_relative_to(tmp_path / "out" / "ray")
        assert load_checkpoint(path)[2]["top1"] == row["top1"]
