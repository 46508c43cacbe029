"""Transfer of pruned checkpoints: masks and sparsity through fine-tuning, the dense mode's start,
the job grid, and a Tune-run transfer writing Parquet rows and MLflow runs (real Ray, MLflow, torch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from source_folders import kept_model, write_sources

from ovit_ray.cli.main import main
from ovit_ray.models import create_model, load_checkpoint, save_checkpoint
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, select_prunable
from ovit_ray.training.transfer import TransferSpec, prepare_transfer, run_transfer

SMALL = dict(epochs=2, max_steps_per_epoch=3, warmup_epochs=0)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """A digits-vit checkpoint with 75% of its prunable weights magnitude-pruned, masks saved with it."""
    torch.manual_seed(0)
    model = create_model("digits-vit")
    params = select_prunable(model, DEFAULT_PATTERNS)
    masks = {}
    for name, p in params.items():
        threshold = p.detach().abs().flatten().kthvalue(int(0.75 * p.numel())).values
        masks[name] = p.detach().abs() > threshold
    MaskSet(masks).apply(model)
    path = tmp_path_factory.mktemp("src") / "target_0.7500_epoch0003.safetensors"
    save_checkpoint(path, model, masks, {"target": 0.75, "method": "magnitude", "model": "digits-vit"})
    return path


def test_sparse_transfer_keeps_masks_and_exact_sparsity_and_changes_the_head(pruned):
    _, masks, _ = load_checkpoint(pruned)
    spec = TransferSpec(dataset="lfw", checkpoint=str(pruned), mode="sparse", **SMALL)
    start = prepare_transfer(spec)
    assert start.model.head.out_features == 2 and start.data.num_classes == 2  # 10 digit classes -> faces
    before = {n: p.detach().clone() for n, p in start.model.named_parameters()}
    row = run_transfer(spec, start=start)
    params = dict(start.model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)  # pruned weights stayed pruned through every step
    assert row["final_sparsity"] == row["achieved_sparsity"] == MaskSet(masks).sparsity()
    assert abs(row["achieved_sparsity"] - 0.75) < 0.01
    assert any(not torch.equal(before[n], params[n]) for n in masks)  # the kept weights did train
    assert 0 <= row["top1"] <= 1 and 0 <= row["val_top1"] <= 1 and 0 <= row["source_top1"] <= 1
    assert row["mode"] == "sparse" and row["epochs"] == 2 and row["cpu_hours"] > 0


def test_dense_transfer_starts_from_the_same_weights_and_lets_pruned_weights_regrow(pruned):
    state, masks, _ = load_checkpoint(pruned)
    spec = TransferSpec(dataset="digits-5-9", checkpoint=str(pruned), mode="dense", **SMALL)
    start = prepare_transfer(spec)
    assert start.masks is None and start.model.head.out_features == 5
    now = start.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items() if not k.startswith("head."))
    row = run_transfer(spec, start=start)
    assert row["final_sparsity"] < 0.1 < row["achieved_sparsity"]  # the masks were dropped


def _transfer_sweep(folder: Path, transfer: dict, **top: object) -> Path:
    path = folder / "t.yaml"
    raw = {"name": "t", "model": "digits-vit", "dataset": "lfw", "seeds": [0, 1], "transfer": transfer, **top}
    path.write_text(yaml.safe_dump({**raw, "search": {"params": {"mode": {"grid": ["sparse", "dense"]}}}}))
    return path


def test_sources_become_a_grid_over_checkpoints_with_the_dense_source_last(pruned, tmp_path):
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep

    sweep = load_sweep(_transfer_sweep(tmp_path, {"sources": {"files": [str(pruned)]}, "epochs": 1}))
    assert sweep.knobs["checkpoint"].grid == [
        str(pruned),
        None,
    ]  # None: the dense source model, the reference
    points = sweep.grid_points()
    assert len(points) == 2 * 2 + 2 and {p["seed"] for p in points} == {0, 1}  # the dense source: one mode
    assert sweep.grid_size == 8 and sweep.max_trials == 6
    spec = sweep.spec(points[0])
    assert (spec.checkpoint, spec.dataset, spec.epochs, spec.model) == (str(pruned), "lfw", 1, "digits-vit")
    no_dense = load_sweep(_transfer_sweep(tmp_path, {"sources": {"files": [str(pruned)], "dense": False}}))
    assert no_dense.knobs["checkpoint"].grid == [str(pruned)]


def test_jobs_grid_runs_the_dense_source_once_per_seed(pruned, tmp_path):
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep

    sweep = load_sweep(_transfer_sweep(tmp_path, {"sources": {"files": [str(pruned)]}}))
    dense = [p for p in sweep.grid_points() if p["checkpoint"] is None]
    assert sorted(p["seed"] for p in dense) == [0, 1] and {p["mode"] for p in dense} == {"dense"}


def test_a_sources_folder_lists_its_kept_models_by_method(tmp_path):
    from ovit_ray.orchestration.kinds.transfer import RESULTS_FILE, kept_sources
    from ovit_ray.orchestration.results import RESULTS_FILE as WRITTEN

    assert RESULTS_FILE == WRITTEN  # the transfer kind reads the file the driver writes
    folder = write_sources(tmp_path / "src", ["digits-vit", "digits04-vit"], ["ovit", "magnitude"])
    assert kept_sources(folder, ["ovit"]) == [
        str(folder / kept_model("digits-vit", "ovit")),
        str(folder / kept_model("digits04-vit", "ovit")),
    ]
    assert kept_sources(folder, None, ["digits04-vit"]) == [
        str(folder / kept_model("digits04-vit", m)) for m in ("ovit", "magnitude")
    ]
    with pytest.raises(
        ValueError, match=r"sources: no kept model in .*results\.parquet for methods \['woodfisher'\]"
    ):
        kept_sources(folder, ["woodfisher"])
    with pytest.raises(ValueError, match="has no results.parquet yet"):
        kept_sources(tmp_path / "empty", None)


@pytest.mark.ray
def test_transfer_fans_out_as_tune_trials_and_writes_parquet_and_mlflow(pruned, tmp_path, ray_local):
    from mlflow import MlflowClient

    out = tmp_path / "t"
    argv = ["transfer", str(pruned), "--dataset", "lfw", "--mode", "sparse", "dense", "--out", str(out)]
    argv += ["--epochs", "1", "--max-steps-per-epoch", "2"]
    assert main(argv) == 0
    rows = read_rows(out / "results.parquet")
    # the pruned source in both modes, the dense source once (its two modes are one run)
    assert sorted((r["source_method"], r["mode"]) for r in rows) == [
        ("dense", "dense"),
        ("magnitude", "dense"),
        ("magnitude", "sparse"),
    ]
    pruned_rows = {r["mode"]: r for r in rows if r["source_method"] == "magnitude"}
    assert pruned_rows["sparse"]["final_sparsity"] == pruned_rows["sparse"]["achieved_sparsity"]
    assert pruned_rows["dense"]["final_sparsity"] < pruned_rows["dense"]["achieved_sparsity"]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("ovit-ray-transfer")]
    trials = client.search_runs([experiment.experiment_id], "tags.`ovit.role` = 'trial'")
    assert len(trials) == 3 and all("mlflow.parentRunId" not in r.data.tags for r in trials)
    assert {"top1_final", "source_top1", "final_sparsity"} <= set(trials[0].data.metrics)
    assert sorted(r.info.run_name for r in trials) == [
        "dense",
        *(f"{pruned.stem}-{m}" for m in ("dense", "sparse")),
    ]
    assert main(argv) == 0  # resumed: nothing re-run, nothing duplicated
    assert len(read_rows(out / "results.parquet")) == 3


def test_cli_bad_dataset_is_one_error_line_and_writes_nothing(pruned, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["transfer", str(pruned), "--dataset", "mnist", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "dataset: unknown dataset 'mnist'" in line and not out.exists()


def test_transfer_sweep_files_validate_and_bad_keys_name_the_field(tmp_path):
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep

    root = Path(__file__).resolve().parents[1]
    for name, sources in (
        ("sweeps/ablation_transfer.yaml", "ablation_transfer_sources"),
        ("sweeps/ci/ablation_transfer_digits.yaml", "ablation_transfer_sources_digits"),
    ):
        folder = write_sources(tmp_path / sources, ["digits-vit", "digits04-vit"], ["ovit", "magnitude"])
        sweep = load_sweep(root / name, tmp_path)
        assert sweep.kind == "transfer" and sweep.knobs["mode"].grid == ["sparse", "dense"]
        kept = [c for c in sweep.knobs["checkpoint"].grid if c is not None]
        assert {Path(c).parent.parent.name.split("-")[-1] for c in kept} == {"ovit", "magnitude"}
        assert all(c.startswith(str(folder)) for c in kept)
    cases = [
        (
            {"sources": {"sweep": "a", "path": "b"}},
            {},
            "transfer.sources: give exactly one of sweep, path, files",
        ),
        ({"mode": "frozen"}, {}, "transfer.mode: Input should be 'sparse' or 'dense', got 'frozen'"),
        ({"epochs": 0}, {}, "transfer.epochs: Input should be greater than 0, got 0"),
        (
            {"sources": {"files": ["a"], "method": ["ovit"]}},
            {},
            "transfer.sources: method: Extra inputs are not permitted",
        ),
        ({}, {"dataset": None}, "dataset: the downstream dataset to transfer to is required"),
    ]
    for transfer, top, message in cases:
        with pytest.raises(ValueError) as err:
            load_sweep(_transfer_sweep(tmp_path, transfer, **top))
        (line,) = str(err.value).splitlines()
        assert message in line and str(tmp_path / "t.yaml") in line, line


@pytest.mark.slow
def test_ci_transfer_sweep_makes_sources_then_writes_transfer_rows(digits_preset, tmp_path, monkeypatch):
    monkeypatch.setenv("OVIT_RAY_CACHE", str(digits_preset.parent))  # the session's trained preset
    files = ["sweeps/ci/ablation_transfer_sources_digits.yaml", "sweeps/ci/ablation_transfer_digits.yaml"]
    assert main(["sweep", *files, "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "ablation_transfer_digits" / "results.parquet")
    # 2 methods x 2 targets x 2 modes + the dense source once
    assert len(rows) == 9 and {r["source_method"] for r in rows} == {"ovit", "magnitude", "dense"}
    sparse = [r for r in rows if r["mode"] == "sparse"]
    assert all(r["final_sparsity"] == r["achieved_sparsity"] for r in sparse)
    assert {round(r["achieved_sparsity"], 1) for r in sparse} == {0.5, 0.9}
    assert main(["sweep", files[1], "--out", str(tmp_path / "ablation_transfer_digits"), "--resume"]) == 0
    assert len(read_rows(tmp_path / "ablation_transfer_digits" / "results.parquet")) == 9  # nothing re-run
