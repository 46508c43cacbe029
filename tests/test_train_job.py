"""A 2-worker gradual run as a Ray Train job on real local Ray, with a worker killed on the first attempt."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from ovit_ray.models import create_model
from ovit_ray.orchestration.specs.run import make_config
from ovit_ray.orchestration.tracking.store import RUN_KEY_TAG, default_tracking_uri
from ovit_ray.orchestration.train.job import run_training
from ovit_ray.pruning import DEFAULT_PATTERNS, PruneSettings, select_prunable
from ovit_ray.training.oneshot import oneshot_rows
from ovit_ray.training.preset import preset_checkpoint
from ovit_ray.training.setup import build_model_and_data

pytestmark = pytest.mark.ray
CRASH_EPOCH = 1


def _kill_rank1_once(marker_dir: str):
    def hook(epoch: int, rank: int) -> None:
        with open(Path(marker_dir) / "starts.log", "a") as log:
            log.write(f"{rank} {epoch}\n")
        marker = Path(marker_dir) / "crashed"
        if rank == 1 and epoch == CRASH_EPOCH and not marker.exists():
            marker.touch()
            time.sleep(10)  # mid-epoch: a checkpoint counts once the Train controller has polled it
            os._exit(1)  # a hard worker death, not an exception

    return hook


@pytest.fixture(scope="module")
def two_worker_run(ray_local, tmp_path_factory):
    preset_checkpoint("digits-vit", progress=False)  # train (or find) the preset before workers need it
    out = tmp_path_factory.mktemp("train_job")
    config = make_config(
        {
            "targets": [0.6, 0.9],
            "window_epochs": 1,
            "lr_max": 3e-4,
            "workers": 2,
            "block_size": 32,
            "num_grads": 16,
            "max_steps_per_epoch": 4,
            "out": str(out),
            "max_failures": 1,
        }
    )
    result = run_training(config, epoch_hook=_kill_rank1_once(str(out)))
    return config, out, result


def test_two_workers_reach_targets_exactly_with_identical_state(two_worker_run):
    _, _, result = two_worker_run
    s = result.summary
    assert s["world_size"] == 2
    assert [t["target_sparsity"] for t in s["targets"]] == [0.6, 0.9]
    total = sum(p.numel() for p in select_prunable(create_model("digits-vit")).values())
    for t in s["targets"]:
        assert round(t["achieved_sparsity"] * total) == round(t["target_sparsity"] * total)
    assert len(set(s["mask_digests"])) == 1 and len(set(s["weight_digests"])) == 1
    assert s["cpu_hours"] > 0 and s["gpu_hours"] == 0


def test_killed_worker_resumes_from_last_checkpoint(two_worker_run):
    _, out, result = two_worker_run
    assert (out / "crashed").exists()
    starts = (out / "starts.log").read_text().split("\n")[:-1]
    for rank in (0, 1):
        epochs = [int(line.split()[1]) for line in starts if line.startswith(f"{rank} ")]
        assert epochs.count(0) == 1  # the finished epoch was not repeated
        assert epochs[-1] == 1 and epochs.count(CRASH_EPOCH) >= 1
    assert result.summary["resumed_from_epoch"] == CRASH_EPOCH
    assert result.summary["total_epochs"] == 2


def test_top1_at_final_target_beats_one_shot(two_worker_run):
    config, _, result = two_worker_run
    settings = PruneSettings(method="ovit", block_size=32, num_grads=16, damp=config.damp)
    row = oneshot_rows(
        build_model_and_data(), [settings], [0.9], param_patterns=DEFAULT_PATTERNS, progress=False
    )[0]
    assert result.summary["targets"][-1]["top1"] >= row["top1"]


def test_mlflow_run_has_params_epoch_metrics_and_compute(two_worker_run):
    config, out, result = two_worker_run
    client = MlflowClient(default_tracking_uri(out))
    experiment = client.get_experiment_by_name(config.experiment)
    runs = client.search_runs([experiment.experiment_id], f"tags.`{RUN_KEY_TAG}` = '{result.run_key}'")
    assert len(runs) == 1  # the restart continued the run instead of creating another
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["strategy"] == "sweep"
    for key in (
        "method",
        "block_size",
        "num_grads",
        "damp",
        "grad_batch_size",
        "lr_schedule",
        "targets",
        "workers",
        "device_type",
        "steps",
    ):
        assert key in run.data.params
    assert run.data.params["workers"] == "2"
    top1 = client.get_metric_history(run.info.run_id, "top1")
    assert sorted(m.step for m in top1) == [0, 1]  # one point per epoch, none repeated after the restart
    assert {"cpu_hours", "gpu_hours", "total_epochs", "wall_seconds", "target_0.9000/top1"} <= set(
        run.data.metrics
    )
    assert run.data.metrics["cpu_hours"] > 0


def test_finished_run_is_reused_not_rerun(two_worker_run):
    config, _, result = two_worker_run
    again = run_training(config)
    assert again.reused and again.rows == result.rows


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
