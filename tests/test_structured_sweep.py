"""Structured sweep files: validation of the grid and its space, and the CI-sized OPTIN frontier through
Ray Tune writing Parquet rows, MLflow parent + child runs and the frontier plot, resumable."""

from pathlib import Path

import mlflow
import pytest
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.results.parquet import read_rows

ROOT = Path(__file__).resolve().parents[1]
CI_FILE = ROOT / "sweeps" / "ci" / "optin_frontier_digits.yaml"


def _sweep(tmp_path: Path, structured: dict, params: dict, algorithm: str = "grid") -> Path:
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(
        yaml.safe_dump({"kind": "structured", "params": params})
    )
    path = tmp_path / "sweeps" / "f.yaml"
    path.parent.mkdir(exist_ok=True)
    methods = {} if "method" in params else {"method": {"grid": ["optin", "group-l2"]}}
    search = {"space": "s", "algorithm": algorithm, "params": methods}
    path.write_text(
        yaml.safe_dump({"name": "f", "model": "digits-vit", "structured": structured, "search": search})
    )
    return path


def test_grid_points_are_the_product_of_grids(tmp_path: Path) -> None:
    path = _sweep(tmp_path, {"budgets": [0.7, 0.9]}, {"token_share": {"grid": [0.0, 0.5]}})
    sweep = load_sweep(path)
    points = sweep.grid_points()
    assert sorted((p["method"], p["token_share"]) for p in points) == [
        ("group-l2", 0.0),
        ("group-l2", 0.5),
        ("optin", 0.0),
        ("optin", 0.5),
    ]
    assert sweep.max_trials == 4
    # each trial reports every budget, largest kept share first
    assert sweep.experiment_kind().targets(sweep.spec(points[0])) == [0.9, 0.7]


def test_structured_knobs_are_searched_like_any_kind(tmp_path: Path) -> None:
    """OPTIN's lambda and temperature with random search (or Optuna): the kind no longer takes grids only."""
    path = _sweep(
        tmp_path, {}, {"lam": {"loguniform": [10.0, 1000.0]}, "temperature": {"uniform": [2, 8]}}, "random"
    )
    sweep = load_sweep(path)
    assert sweep.searched == ["lam", "temperature", "method"]
    assert sweep.file.search.algorithm == "random"


@pytest.mark.parametrize(
    ("structured", "params", "message"),
    [
        ({"budgets": [1.2]}, {}, "structured.budgets.0: Input should be less than or equal to 1, got 1.2"),
        (
            {},
            {"lam": {"uniform": [1, 9]}},
            "search.algorithm grid needs grid or fixed values, got sampled lam",
        ),
        ({}, {"heads": 3}, "search.params.heads: not a knob of structured"),
        (
            {"method": "ovit"},
            {},
            "structured.method: must be one of optin, group-l1, group-l2, taylor, random",
        ),
        ({}, {"method": {"grid": ["optin", "ovit"]}}, "search.params.method: 'ovit' is not a valid method"),
        (
            {"then_method": "ovit", "then_sparsity": 1.0},
            {},
            "structured.then_sparsity: Input should be less than 1",
        ),
        ({"then_sparsity": 0.5}, {}, "then_method: a then_sparsity or then_pattern needs the method"),
        (
            {"recover": "lsq"},
            {"token_share": {"grid": [0.0, 0.5]}},
            "search.params.token_share: 0.5 is not a valid token_share (recover: lsq does not rescale",
        ),
    ],
)
def test_bad_structured_sweeps_name_the_problem(
    tmp_path: Path, structured: dict, params: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=None) as err:
        load_sweep(_sweep(tmp_path, structured, params))
    assert message in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.ray
def test_ci_frontier_runs_through_tune_and_resumes(tmp_path: Path, digits_preset, ray_local) -> None:
    out = tmp_path / "out"
    assert main(["sweep", str(CI_FILE), "--out", str(out)]) == 0
    rows = read_rows(out / "results.parquet")
    # OPTIN and a baseline (as the CI file names them) x 1 budget, one seed
    methods = yaml.safe_load(CI_FILE.read_text())["search"]["params"]["method"]["grid"]
    assert len(methods) == 2 and methods[0] == "optin"
    assert sorted((r["method"], r["target"]) for r in rows) == sorted((m, 0.6) for m in methods)
    for row in rows:
        assert 0.59 < row["macs_ratio"] <= 0.6 and row["speedup_throughput"] > 0
        assert (out / row["kept_model"]).is_file() and not Path(row["kept_model"]).is_absolute()
        assert row["top1"] == row["top1_masked"]
    assert (out / "plots" / "frontier.png").stat().st_size > 0

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name.startswith("ovit-ray-structured-ci")]
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags.get("ovit.role", "") for r in runs)
    assert roles == ["sweep", "trial", "trial"] and all("mlflow.parentRunId" not in r.data.tags for r in runs)
    trial = next(r for r in runs if r.data.tags["ovit.role"] == "trial")
    assert {"top1_vs_macs", "speedup_throughput", "gmacs_sparse"} <= set(trial.data.metrics)
    (sweep_run,) = [r for r in runs if r.data.tags["ovit.role"] == "sweep"]
    stored = out / "artifacts" / sweep_run.info.artifact_uri.removeprefix("mlflow-artifacts:/") / "plots"
    assert "frontier.png" in [p.name for p in stored.iterdir()]

    assert main(["sweep", str(CI_FILE), "--out", str(out), "--resume"]) == 0  # nothing re-run
    assert len(read_rows(out / "results.parquet")) == 2
    assert main(["report", str(out)]) == 0
