"""Experiment kinds are plug-ins: a toy kind registered here runs through `ovit-ray sweep` (Ray Tune, MLflow,
Parquet, report) with no other change; it also makes the interrupt test deterministic: its trials wait for
files the test creates, so the kill comes at a known event however slow the machine is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict

from ovit_ray.cli.main import main
from ovit_ray.knobs import Knobs, knob
from ovit_ray.orchestration.kinds import ExperimentKind, Host, get_kind, kind_names, register_kind
from ovit_ray.orchestration.results.parquet import read_rows

HERE = Path(__file__).resolve().parent


class ToySpec(Knobs):
    value: int = knob(0, "the number this trial squares", ge=0)
    folder: str = knob("", "where the trial writes its start and waits for its release")
    hold: bool = knob(False, "wait for `<folder>/release` (or `release-<value>`) before the second target")


class ToyResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    square: int | None = None


@register_kind
class Toy(ExperimentKind):
    name = "toy"
    summary = "a test's kind: squares its value"
    spec = ToySpec
    result = ToyResult
    target_name = "step"
    targets_knob = None

    def targets(self, spec: Any) -> list[float]:
        return [0.5, 1.0]

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.result import TargetResult

        folder = Path(spec.folder)
        with (folder / f"started-{spec.value}").open("a") as marks:  # one line per start of this trial
            marks.write("started\n")
        host.target(TargetResult(target=0.5, top1=spec.value / 10, val_top1=spec.value / 10))
        while spec.hold and not (
            (folder / "release").exists() or (folder / f"release-{spec.value}").exists()
        ):
            time.sleep(0.2)
        host.target(
            TargetResult(
                target=1.0, top1=spec.value / 10, val_top1=spec.value / 10, extra={"square": spec.value**2}
            )
        )


def _sweep(tmp_path: Path, hold: bool, values: list[int]) -> Path:
    path = tmp_path / "toy.yaml"
    toy = {"folder": str(tmp_path), "hold": hold}
    sweep = {
        "name": "toy",
        "imports": ["test_experiment_kinds"],
        "toy": toy,
        "search": {"params": {"value": {"grid": values}}, "max_concurrent_trials": 1},
        "resources": {"cpus_per_worker": 0.5},
        "mlflow": {"experiment": "toys"},
    }
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_the_registry_holds_the_built_in_kinds_and_this_one() -> None:
    assert {"gradual", "oneshot", "structured", "depth", "transfer", "toy"} <= set(kind_names())
    assert get_kind("toy").summary.startswith("a test's kind")


@pytest.mark.ray
def test_a_kind_registered_in_a_test_runs_through_ovit_ray_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _sweep(tmp_path, hold=False, values=[2, 3])
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    rows = read_rows(out / "results.parquet")
    assert sorted((r["value"], r["target"], r["square"]) for r in rows) == [
        (2, 0.5, None),
        (2, 1.0, 4),
        (3, 0.5, None),
        (3, 1.0, 9),
    ]
    assert {r["kind"] for r in rows} == {"toy"}
    trials = read_rows(out / "trials.parquet")
    assert sorted(t["status"] for t in trials) == ["finished", "finished"]
    assert all(t["allocated_cpu_hours"] > 0 for t in trials)
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("toys").experiment_id])
    children = [r for r in runs if r.data.tags.get("ovit.role") == "trial"]
    assert sorted(r.data.params["value"] for r in children) == ["2", "3"]
    assert all("null" not in r.data.params.values() for r in runs)
    series = client.get_metric_history(children[0].info.run_id, "top1_vs_step")
    assert sorted(m.step for m in series) == [50, 100]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "value" in table and "@50" in table and "@100" in table
    assert max(len(line) for line in table.splitlines() if not line.startswith("plot: ")) <= 80


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_killed_at_a_known_event_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    """Trial 1 finishes; trial 2 has delivered its first target and waits for a release that only the
    resume gives: the SIGKILL comes then, whatever the machine's speed."""
    path = _sweep(tmp_path, hold=True, values=[1, 2])
    (tmp_path / "release").unlink(missing_ok=True)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    # trial 1 must not wait: its own release (trial 2 waits for the shared one, which only the resume gives)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovit_ray.cli.main", "sweep", str(path), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: (tmp_path / "started-1").exists(), proc)
        (tmp_path / "release-1").touch()
        _wait_for(lambda: _finished(out) == {1}, proc)
        _wait_for(lambda: (tmp_path / "started-2").exists() and _targets(out, 2) == 1, proc)
        time.sleep(2)  # Tune saves its experiment state every second
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its embedded Ray die without cleaning up
        proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert _finished(out) == {1}
    (tmp_path / "release").touch()
    sys.path.insert(0, str(HERE))
    assert main(["sweep", str(path), "--out", str(out), "--resume"]) == 0
    assert _finished(out) == {1, 2}
    assert (tmp_path / "started-1").read_text().count("started") == 1  # the finished trial did not run again
    rows = read_rows(out / "results.parquet")
    assert len({(r["trial_id"], r["target"]) for r in rows}) == len(rows) == 4  # no duplicated rows


def _finished(out: Path) -> set[int]:
    path = out / "trials.parquet"
    return {t["value"] for t in read_rows(path) if t["status"] == "finished"} if path.exists() else set()


def _targets(out: Path, value: int) -> int:
    path = out / "results.parquet"
    return sum(r["value"] == value for r in read_rows(path)) if path.exists() else 0


def _wait_for(condition: Any, proc: subprocess.Popen[bytes], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the sweep ended early (exit {proc.returncode})"
        assert time.monotonic() < deadline, "the event did not come"
        time.sleep(0.2)
