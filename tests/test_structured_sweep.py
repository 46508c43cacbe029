"""Structured sweep files: validation of the grid and its space, and the CI-sized OPTIN frontier through
Ray Tune writing Parquet rows, MLflow parent + child runs and the frontier plot, resumable."""

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.structured.sweep_file import load_structured_sweep

ROOT = Path(__file__).resolve().parents[1]
CI_FILE = ROOT / "sweeps" / "ci" / "optin_frontier_digits.yaml"


def _sweep(tmp_path: Path, structured: dict, params: dict) -> Path:
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(yaml.safe_dump({"params": params}))
    path = tmp_path / "sweeps" / "f.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        yaml.safe_dump({"name": "f", "structured": {"space": "s", "methods": ["optin"], **structured}})
    )
    return path


def test_grid_points_are_the_product_of_grids(tmp_path: Path) -> None:
    path = _sweep(
        tmp_path, {"overrides": {"token_share": {"grid": [0.0, 0.5]}}}, {"flops_ratio": {"grid": [0.9, 0.7]}}
    )
    points = load_structured_sweep(path).points
    assert sorted((p.flops_ratio, p.token_share) for p in points) == [
        (0.7, 0.0),
        (0.7, 0.5),
        (0.9, 0.0),
        (0.9, 0.5),
    ]


@pytest.mark.parametrize(
    ("structured", "params", "message"),
    [
        ({}, {"flops_ratio": {"grid": [1.2]}}, "flops_ratio"),
        ({}, {"flops_ratio": {"uniform": [0.5, 0.9]}}, "fixed values or grids only"),
        ({}, {"flops_ratio": 0.5, "heads": 3}, "unknown knob(s) ['heads']"),
        ({"methods": ["ovit"]}, {"flops_ratio": 0.5}, "structured.methods.0"),
        ({"unstructured": {"sparsities": [1.0]}}, {"flops_ratio": 0.5}, "sparsities must be in (0, 1)"),
        ({}, {"token_share": 0.5}, "must give flops_ratio"),
    ],
)
def test_bad_structured_sweeps_name_the_problem(
    tmp_path: Path, structured: dict, params: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=None) as err:
        load_structured_sweep(_sweep(tmp_path, structured, params))
    assert message in str(err.value)


@pytest.mark.ray
def test_ci_frontier_runs_through_tune_and_resumes(tmp_path: Path, digits_preset, ray_local) -> None:
    shutil.copytree(ROOT / "search_spaces", tmp_path / "search_spaces")
    (tmp_path / "sweeps").mkdir()
    sweep_file = tmp_path / "sweeps" / CI_FILE.name
    shutil.copy(CI_FILE, sweep_file)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0
    rows = read_rows(out / "results.parquet")
    # 2 methods x 1 budget + 1 unstructured point, one seed
    assert sorted((r["method"], r["flops_ratio"]) for r in rows) == [
        ("none", 1.0),
        ("optin", 0.6),
        ("structured-magnitude", 0.6),
    ]
    for row in rows:
        assert row["speedup_throughput"] > 0 and Path(row["checkpoint"]).is_file()
        assert row["top1"] == row["top1_masked"]
    # Scored once in the driver: no trial computed scores.
    assert all(r["score_seconds"] == 0 for r in rows)
    (none,) = [r for r in rows if r["method"] == "none"]
    assert none["then_method"] == "ovit" and none["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (out / "plots" / "frontier.png").stat().st_size > 0

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["ovit-ray-structured-ci"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3
    assert {"top1", "speedup_throughput", "gmacs"} <= set(children[0].data.metrics)
    stored = out / "artifacts" / parents[0].info.artifact_uri.removeprefix("mlflow-artifacts:/") / "plots"
    assert [p.name for p in stored.iterdir()] == ["frontier.png"]

    assert main(["sweep", str(sweep_file), "--out", str(out)]) == 0  # resumed: nothing re-run
    assert len(read_rows(out / "results.parquet")) == 3
    assert main(["report", str(out)]) == 0
