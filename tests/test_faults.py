"""Faults injected into real sweeps: a Train worker killed, the MLflow server stopped, a node
removed, a corrupt checkpoint; trials on autoscaled fake-GPU nodes; fuzzed sweep files and unsafe
loaders. (The sweep driver killed with SIGKILL and resumed: tests/test_sweep.py.)"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.cli.main import main
from ovit_ray.orchestration.cluster.fake_autoscaler import FAKE_GPU, start_fake_autoscaling_cluster
from ovit_ray.orchestration.cluster.local import LocalRayCluster, group_processes, start_two_nodes
from ovit_ray.orchestration.common.net import wait_until
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME
from ovit_ray.orchestration.tracking.server import MlflowServer

ROOT = Path(__file__).resolve().parents[1]
TRAIN = {
    "model": "digits-vit",
    "window_epochs": 1,
    "num_grads": 16,
    "block_size": 32,
    "max_steps_per_epoch": 4,
}


@pytest.fixture(autouse=True, scope="module")
def _spaces() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:  # module scope: the shared sweep fixtures need it too
        mp.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))
        yield


def _sweep_file(
    folder: Path, name: str, targets: list[float], resources: dict[str, Any], seeds: list[int]
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "train": {**TRAIN, "targets": targets},
                "resources": resources,
                "search": {"space": "fixed", "algorithm": "grid", "overrides": {"seed": {"grid": seeds}}},
            }
        )
    )
    return path


def _epochs_reported(out: Path, name: str) -> dict[str, list[int]]:
    """Per trial, the `epoch` of every per-epoch result Tune recorded (repeats show re-done work)."""
    found = {}
    for result in (out / "ray" / name).glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        found[result.parent.name] = [
            r["epoch"] for r in lines if "epoch" in r and not r.get("trial_complete")
        ]
    return found


# ---- bad input and security (fast) ----------------------------------------------------------


def _mutations(raw: dict[str, Any], rng: random.Random) -> Iterator[str]:
    """YAML texts: a key deleted, a value of the wrong type or size, deep nesting, garbage."""
    paths = [[k] for k in raw] + [[k, j] for k, v in raw.items() if isinstance(v, dict) for j in v]
    weird = [None, [], {}, "x" * 10_000, -1, 10**300, 1e308, float("nan"), True, [[[]]], {"a": {"b": 1}}]
    for path in rng.sample(paths, min(8, len(paths))):
        for mutate in ("delete", "replace"):
            doc = json.loads(json.dumps(raw))
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            if mutate == "delete":
                del parent[path[-1]]
            else:
                parent[path[-1]] = rng.choice(weird)
            yield yaml.safe_dump(doc)
    text = yaml.safe_dump(raw)
    yield text[: rng.randrange(1, len(text))] + "\n  - ][: {"  # truncated, then garbage
    yield "search: " + "{a: " * 1500 + "1" + "}" * 1500  # deeper than the YAML composer can recurse
    yield "train: {window_epochs: " + "9" * 5000 + "}"  # an int past Python's str->int limit
    yield "\x00\xff binary"
    yield "- just\n- a list"


def test_fuzzed_sweep_files_fail_with_one_clear_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(0)
    shipped = sorted((ROOT / "sweeps").rglob("*.yaml"))
    assert shipped
    failures = 0
    for i, text in enumerate(
        t for source in shipped for t in _mutations(yaml.safe_load(source.read_text()), rng)
    ):
        path = tmp_path / f"fuzz{i}.yaml"
        path.write_text(text)
        rc = main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "out")])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        if rc != 0:
            failures += 1
            lines = err.strip().splitlines()
            assert rc == 2 and lines[0].startswith("ovit-ray sweep: error: ") and str(path) in lines[0], err[
                :500
            ]
            assert all(str(path) in line and len(line) < 400 for line in lines), err[:500]
    assert failures > 40  # most mutations break the file; the rest (e.g. a deleted description) are valid


def test_no_unsafe_loaders_in_the_package() -> None:
    """Checkpoints with `weights_only=True` (no pickle code execution), YAML with the safe loader."""
    for source in (ROOT / "ovit_ray").rglob("*.py"):
        text = source.read_text()
        for line in text.splitlines():
            assert "torch.load(" not in line or "weights_only=True" in line, f"{source}: {line.strip()}"
        assert not re.search(r"yaml\.(load|unsafe_load|full_load)\(", text), source
        assert "pickle.load" not in text, source


def test_credentials_in_uris_are_refused_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Credentials come from the environment only: a URI carrying one would land in params and logs."""
    source = yaml.safe_load((ROOT / "sweeps" / "ci" / "ablation_block_size_digits.yaml").read_text())
    variants = [
        {"mlflow": {"uri": "https://bob:hunter2@mlflow.example:443"}},
        {"storage": "s3://AKIAEXAMPLE:hunter2@bucket/ovit"},
    ]
    for i, change in enumerate(variants):
        path = tmp_path / f"creds{i}.yaml"
        path.write_text(yaml.safe_dump({**source, **change}))
        assert main(["sweep", str(path), "--dry-run"]) == 2
    good = tmp_path / "creds0.yaml"
    good.write_text(yaml.safe_dump(source))
    assert main(["sweep", str(good), "--dry-run", "--mlflow-uri", "http://bob:hunter2@127.0.0.1:5000"]) == 2
    assert main(["sync-mlflow", str(tmp_path), "--mlflow-uri", "http://bob:hunter2@127.0.0.1:5000"]) == 2
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err and err.count("must not carry credentials") == 4


def test_corrupt_checkpoint_is_named_and_the_previous_one_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ray.train import Checkpoint

    from ovit_ray.orchestration.train.reporter import OVIT, RayReporter
    from ovit_ray.training.gradual import CorruptCheckpointError, LocalReporter, run_gradual
    from ovit_ray.training.kept import local_folder
    from ovit_ray.training.spec import RunSpec, Schedule

    schedule = Schedule.of([(0, 0.5), (1, 0.8)], [(0.5, 0, 1), (0.8, 1, 3)])
    spec = RunSpec(
        method="magnitude",
        block_size=32,
        num_grads=8,
        max_steps_per_epoch=2,
    )

    def stop_at_2(epoch: int, rank: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_gradual(spec, schedule, LocalReporter(tmp_path / "ckpt"), epoch_hook=stop_at_2)
    first, latest = sorted((tmp_path / "ckpt").glob("checkpoint_*"))
    state = latest / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated mid-upload

    reports: list[dict[str, Any]] = []
    reporter = RayReporter(
        lambda metrics, checkpoint: reports.append(metrics),
        lambda: Checkpoint.from_directory(str(latest)),
        0,
        1,
        local_folder(tmp_path / "kept"),
    )
    with caplog.at_level(logging.ERROR):
        summary = run_gradual(spec, schedule, reporter)
    assert f"checkpoint {state} cannot be read" in caplog.text
    assert summary["resumed_from_epoch"] == 1 and [r[OVIT]["epoch"]["epoch"] for r in reports] == [1, 2]

    (first / "state.pt").write_bytes(b"not a zip")
    with pytest.raises(CorruptCheckpointError, match="no readable checkpoint left"):
        run_gradual(spec, schedule, reporter)


# ---- faults on real local Ray clusters (slow) -----------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_fake_gpu_sweep_scales_worker_nodes_up_and_releases_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    from ovit_ray.training.preset import preset_checkpoint

    preset_checkpoint("digits-vit", progress=False)
    path = _sweep_file(
        tmp_path, "gpu", [0.5], {"workers": 1, "cpus_per_worker": 1, "custom": {FAKE_GPU: 1}}, [0, 1]
    )
    seen: set[float] = set()
    done = threading.Event()

    def watch() -> None:  # what kinds of nodes are alive, while the sweep runs
        while not done.is_set():
            seen.update(n["Resources"].get(FAKE_GPU, 0) for n in ray.nodes() if n["Alive"])
            time.sleep(0.5)

    with (
        start_fake_autoscaling_cluster(tmp_path / "cluster", ROOT / "cluster.yaml") as cluster,
        cluster.driver_env(),
    ):
        ray.init(address=cluster.address)
        try:
            assert sum(n["Alive"] for n in ray.nodes()) == 1  # the head alone, without fake_gpu
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            rc = main(["sweep", str(path), "--out", str(tmp_path / "out"), "--address", cluster.address])
            done.set()
            watcher.join(5)
            assert rc == 0, capsys.readouterr().err
            assert "2 finished" in capsys.readouterr().out
            assert 1 in seen  # a gpu1-type node was launched for the trials (the head has no fake_gpu)
            wait_until(
                lambda: sum(n["Alive"] for n in ray.nodes()) == 1, 180, "idle worker nodes to be released"
            )
        finally:
            ray.shutdown()


def _train_workers(cluster: LocalRayCluster) -> dict[int, list[int]]:
    """Ray Train worker processes per node index. Ray workers run in their own process group, but
    their parent, the node's raylet, is in the group of the node's `ray start`."""
    node_of = {pid: i for i, node in enumerate(cluster.nodes) for pid in group_processes(node.proc.pid)}
    found: dict[int, list[int]] = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if not cmdline.read_bytes().startswith(b"ray::RayTrainWorker"):
                continue
            parent = int((cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent in node_of:
            found.setdefault(node_of[parent], []).append(int(cmdline.parent.name))
    return found


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    import ray

    from ovit_ray.training.preset import preset_checkpoint

    preset_checkpoint("digits-vit", progress=False)  # trained once, before any node needs it
    with start_two_nodes(tmp_path_factory.mktemp("two_nodes")) as cluster, cluster.driver_env():
        ray.init(address=cluster.address)
        try:
            wait_until(lambda: sum(n["Alive"] for n in ray.nodes()) == 2, 120, "the second node")
            yield cluster
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def ddp_sweep_with_faults(two_nodes: LocalRayCluster, tmp_path_factory: pytest.TempPathFactory):
    """One 2-worker DDP trial spread over both nodes (0.9 CPU each, one CPU per node); once its first
    checkpoint exists, a Train worker is SIGKILLed and the MLflow server stopped until the sweep ends."""
    from ovit_ray.orchestration.tune.sweep import run_sweep

    folder = tmp_path_factory.mktemp("ddp")
    path = _sweep_file(folder, "ddp", [0.5, 0.75, 0.9], {"workers": 2, "cpus_per_worker": 0.9}, [0])
    out = folder / "out"
    server = MlflowServer(folder / "mlflow").start()
    seen: dict[str, Any] = {}

    def inject() -> None:
        wait_until(
            lambda: any((out / "ray" / "train").glob("*-run0/checkpoint_*")),
            600,
            "the first checkpoint",
            poll_s=0.2,
        )
        seen["workers"] = _train_workers(two_nodes)
        victim = seen["workers"][1][0]  # the worker on the second node
        os.kill(victim, signal.SIGKILL)
        seen["killed"] = victim
        server.stop()

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    logger = logging.getLogger("ovit_ray.orchestration.tracking.client")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        began = time.monotonic()
        outcome = run_sweep(path, out, address=two_nodes.address, mlflow_uri=server.url)
        seen["seconds"] = time.monotonic() - began
        injector.join(5)
        seen["outbox_after_sweep"] = (out / OUTBOX_NAME).exists()
        server.start()  # back on the same port and folder
        seen["sync_rc"] = main(["sync-mlflow", str(out), "--mlflow-uri", server.url])
        yield outcome, out, server, seen, [r.getMessage() for r in records]
    finally:
        logger.removeHandler(handler)
        server.stop()


@pytest.mark.ray
@pytest.mark.slow
def test_ddp_trial_spreads_over_two_nodes_and_survives_a_killed_worker(ddp_sweep_with_faults) -> None:
    outcome, out, _, seen, _ = ddp_sweep_with_faults
    assert sorted(seen["workers"]) == [0, 1]  # one Train worker on each ray start node
    assert (
        "killed" in seen and outcome.totals["trials_finished"] == 1 and outcome.totals["trials_failed"] == 0
    )
    rows = read_rows(out / "results.parquet")
    assert sorted(r["target_sparsity"] for r in rows) == [0.5, 0.75, 0.9]
    (epochs,) = _epochs_reported(out, "ddp").values()
    assert sorted(set(epochs)) == [0, 1, 2] and len(epochs) - 3 <= 1  # at most one epoch done twice


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_outage_keeps_metrics_locally_and_sync_replays_them(ddp_sweep_with_faults) -> None:
    outcome, out, server, seen, warnings = ddp_sweep_with_faults
    assert seen["outbox_after_sweep"]  # the trial went on while the server was down
    unreachable = [w for w in warnings if "unreachable" in w]
    assert len(unreachable) == 1 and f"ovit-ray sync-mlflow {out}" in unreachable[0]
    assert seen["sync_rc"] == 0 and not (out / OUTBOX_NAME).exists()
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name("ovit-ray-sweeps").experiment_id])
    parents = [r for r in runs if r.data.tags.get("ovit.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.parent_run_id]
    assert len(parents) == 1 and len(children) == 1 and len(runs) == 2  # continued, not duplicated
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parents[0].data.metrics["trials_finished"] == 1
    (epochs,) = _epochs_reported(out, "ddp").values()
    assert len(client.get_metric_history(children[0].info.run_id, "top1")) == len(epochs)


@pytest.mark.ray
@pytest.mark.slow
def test_removed_node_trials_are_rescheduled_on_the_remaining_node(
    two_nodes: LocalRayCluster, tmp_path: Path
) -> None:
    """Runs last on the module's cluster: it stops the second node."""
    from ovit_ray.orchestration.tune.sweep import run_sweep

    path = _sweep_file(tmp_path, "nodes", [0.5, 0.75, 0.9], {"workers": 1, "cpus_per_worker": 1}, [0, 1])
    out = tmp_path / "out"

    def remove_node() -> None:
        wait_until(
            lambda: len(list((out / "ray" / "nodes").glob("*/checkpoint_*"))) >= 2,
            600,
            "a checkpoint of each trial",
            poll_s=0.2,
        )
        two_nodes.nodes[1].stop()

    remover = threading.Thread(target=remove_node, daemon=True)
    remover.start()
    outcome = run_sweep(path, out, address=two_nodes.address)
    remover.join(5)
    assert not two_nodes.nodes[1].alive()
    assert outcome.totals["trials_finished"] == 2 and outcome.totals["trials_failed"] == 0
    assert sorted(r["seed"] for r in read_rows(out / "results.parquet")) == [0, 0, 0, 1, 1, 1]
    epochs = _epochs_reported(out, "nodes")
    assert all(sorted(set(e)) == [0, 1, 2] and len(e) - 3 <= 1 for e in epochs.values())
    assert any(
        (out / "ray" / "nodes" / trial / "error.txt").exists() for trial in epochs
    )  # lost with the node
