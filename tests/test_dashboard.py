"""`ovit-ray dashboard OUT` in a real headless browser: optuna-dashboard over a sweep's study shows its trials,
the named objective, and each trial's curve (its top-1 at every target, as intermediate values)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.common.net import free_port
from ovit_ray.orchestration.tracking.dashboard import Dashboard
from ovit_ray.orchestration.tracking.ui import chromium, render

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_the_dashboard_shows_the_trials_their_objective_and_curves(tmp_path: Path) -> None:
    if chromium() is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (the Makefile's set-up does this)"
        )
    sweep = tmp_path / "toy.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "dash",
                "imports": ["test_experiment_kinds"],  # the toy kind (tests/ is on the path under pytest)
                "toy": {"folder": str(tmp_path)},
                "search": {"params": {"value": {"randint": [0, 9]}}, "algorithm": "optuna", "num_samples": 2},
                "resources": {"cpus_per_worker": 0.5},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    with Dashboard(out, free_port()) as dashboard:
        (study,) = requests.get(f"{dashboard.url}/api/studies", timeout=30).json()["study_summaries"]
        detail = requests.get(f"{dashboard.url}/api/studies/{study['study_id']}", timeout=30).json()
        assert detail["objective_names"] == ["val_top1_final"] and detail["has_intermediate_values"]
        assert len(detail["trials"]) == 2
        assert all([v["step"] for v in t["intermediate_values"]] == [50, 100] for t in detail["trials"])
        dom = render(f"{dashboard.url}/dashboard/studies/{study['study_id']}", size=(1600, 2400))
        assert study["study_name"] in dom and "val_top1_final" in dom
        dom = render(f"{dashboard.url}/dashboard/studies/{study['study_id']}/trials", size=(1600, 2400))
        assert "Trial 0" in dom and "Trial 1" in dom


def test_a_folder_without_a_study_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
