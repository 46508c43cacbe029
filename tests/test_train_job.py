"""A 2-worker gradual run on Ray Train inside a Tune trial, with a worker killed on the first attempt: a kind
registered here (the gradual kind plus a fault-injecting epoch hook) runs through the one driver."""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from ovit_ray.knobs import knob
from ovit_ray.models import create_model
from ovit_ray.orchestration.kinds import register_kind
from ovit_ray.orchestration.kinds.gradual import Gradual, GradualSpec
from ovit_ray.orchestration.kinds.sweep_file import sweep_from
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tune.driver import run_sweep
from ovit_ray.pruning import PruneSettings, select_prunable
from ovit_ray.training.oneshot import oneshot_rows
from ovit_ray.training.preset import preset_checkpoint
from ovit_ray.training.setup import build_model_and_data

CRASH_EPOCH = 1


def _kill_rank1_once(marker_dir: str, epoch: int, rank: int) -> None:
    with open(Path(marker_dir) / "starts.log", "a") as log:
        log.write(f"{rank} {epoch}\n")
    marker = Path(marker_dir) / "crashed"
    if rank == 1 and epoch == CRASH_EPOCH and not marker.exists():
        marker.touch()
        time.sleep(10)  # mid-epoch: a checkpoint counts once the Train controller has polled it
        os._exit(1)  # a hard worker death, not an exception


class FaultySpec(GradualSpec):
    crash_dir: str = knob("", "where the fault hook keeps its marks")


@register_kind
class FaultyGradual(Gradual):
    """The gradual kind whose loop kills rank 1 once; the summary is kept for the assertions."""

    name = "faulty-gradual"
    spec = FaultySpec

    def run(self, spec: Any, host: Any) -> None:
        from ovit_ray.training.gradual.run import train_loop

        schedule = spec.schedule()
        hook = partial(_kill_rank1_once, spec.crash_dir)
        summary = host.train(
            train_loop,
            {"spec": spec, "schedule": schedule, "epoch_hook": hook},
            spec,
            schedule.total_epochs,
            "run0",
        )
        (Path(spec.crash_dir) / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def two_worker_run(ray_local, tmp_path_factory):
    preset_checkpoint("digits-vit", progress=False)  # train (or find) the preset before workers need it
    out = tmp_path_factory.mktemp("train_job")
    raw = {
        "name": "two-workers",
        "model": "digits-vit",
        "faulty-gradual": {
            "targets": [0.6, 0.9],
            "window_epochs": 1,
            "lr_max": 3e-4,
            "block_size": 32,
            "num_grads": 16,
            "max_steps_per_epoch": 4,
            "crash_dir": str(out),
        },
        "resources": {"workers": 2, "cpus_per_worker": 0.9, "max_failures": 1},
    }
    sweep = sweep_from(raw)
    outcome = run_sweep(sweep, out / "sweep")
    return sweep, out, outcome, json.loads((out / "summary.json").read_text())


@pytest.mark.ray
def test_two_workers_reach_targets_exactly_with_identical_state(two_worker_run):
    _, out, outcome, s = two_worker_run
    assert outcome.counts["finished"] == 1 and s["world_size"] == 2
    rows = read_rows(out / "sweep" / "results.parquet")
    assert [r["target"] for r in rows] == [0.6, 0.9] and {r["workers"] for r in rows} == {2}
    total = sum(p.numel() for p in select_prunable(create_model("digits-vit")).values())
    for r in rows:
        assert round(r["achieved_sparsity"] * total) == round(r["target"] * total)
        assert (out / "sweep" / r["kept_model"]).is_file() or "://" in r["kept_model"]
    assert len(set(s["mask_digests"])) == 1 and len(set(s["weight_digests"])) == 1
    assert s["cpu_hours"] > 0 and s["gpu_hours"] == 0


@pytest.mark.ray
def test_killed_worker_resumes_from_last_checkpoint(two_worker_run):
    _, out, _, summary = two_worker_run
    assert (out / "crashed").exists()
    starts = (out / "starts.log").read_text().split("\n")[:-1]
    for rank in (0, 1):
        epochs = [int(line.split()[1]) for line in starts if line.startswith(f"{rank} ")]
        assert epochs.count(0) == 1  # the finished epoch was not repeated
        assert epochs[-1] == 1 and epochs.count(CRASH_EPOCH) >= 1
    assert summary["resumed_from_epoch"] == CRASH_EPOCH
    assert summary["total_epochs"] == 2


@pytest.mark.ray
def test_top1_at_final_target_beats_one_shot(two_worker_run):
    _, out, _, _ = two_worker_run
    settings = PruneSettings(method="ovit", block_size=32, num_grads=16)
    row = oneshot_rows(build_model_and_data(), [settings], [0.9], progress=False)[0]
    final = max(read_rows(out / "sweep" / "results.parquet"), key=lambda r: r["target"])
    assert final["top1"] >= row["top1"]


@pytest.mark.ray
def test_mlflow_run_has_params_epoch_metrics_and_compute(two_worker_run):
    _, out, _, _ = two_worker_run
    client = MlflowClient(f"sqlite:///{out / 'sweep' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ovit-ray-sweeps")
    runs = [
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("ovit.role") == "trial"
    ]
    assert len(runs) == 1  # the restarted worker continued the trial's run instead of creating another
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["ovit.status"] == "finished"
    for key in (
        "method",
        "block_size",
        "num_grads",
        "damp",
        "grad_batch_size",
        "lr_schedule",
        "targets",
        "workers",
        "strategy",
    ):
        assert key in run.data.params
    assert run.data.params["workers"] == "2"
    top1 = client.get_metric_history(run.info.run_id, "top1")
    assert (
        len(top1) == len({m.step for m in top1}) == 2
    )  # one point per epoch, none repeated after the restart
    assert {"cpu_hours", "allocated_cpu_hours", "epochs_total"} <= set(run.data.metrics)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "top1_vs_sparsity")) == [60, 90]
    assert run.data.metrics["cpu_hours"] > 0


@pytest.mark.ray
def test_finished_run_is_kept_not_rerun(two_worker_run):
    sweep, out, _, _ = two_worker_run
    rows = read_rows(out / "sweep" / "results.parquet")
    again = run_sweep(sweep, out / "sweep", resume=True)
    assert again.counts["finished"] == 1 and read_rows(out / "sweep" / "results.parquet") == rows


@pytest.mark.ray
def test_embedded_ray_reports_loopback_even_when_a_script_imports_ray_itself(tmp_path: Path) -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER at import: the orchestration layer must set it first."""
    import subprocess
    import sys

    script = (
        "from ovit_ray.orchestration.common.ray_session import ray_session\nimport ray\n"
        "with ray_session():\n    print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}))\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['127.0.0.1']"
