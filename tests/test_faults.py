"""Faults injected into real sweeps: a Train worker killed, the MLflow server stopped, a node
removed, a corrupt checkpoint; trials on autoscaled fake-GPU nodes; fuzzed sweep files and unsafe
loaders. (The sweep driver killed with SIGKILL and resumed: tests/test_sweep.py.)"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from ovit_ray.cli.main import main
from ovit_ray.knobs import knob
from ovit_ray.orchestration.cluster.fake_autoscaler import FAKE_GPU, start_fake_autoscaling_cluster
from ovit_ray.orchestration.cluster.local import LocalRayCluster, start_two_nodes
from ovit_ray.orchestration.common.net import wait_until
from ovit_ray.orchestration.kinds import register_kind
from ovit_ray.orchestration.kinds.gradual import Gradual, GradualSpec
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME
from ovit_ray.orchestration.tracking.server import MlflowServer
from ovit_ray.orchestration.tune.driver import run_sweep

ROOT = Path(__file__).resolve().parents[1]
GRADUAL = {
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
    folder: Path,
    name: str,
    targets: list[float],
    resources: dict[str, Any],
    seeds: list[int],
    kind: str = "gradual",
    **knobs: Any,
) -> Path:
    """A grid sweep over `seeds` of `kind` (the gradual kind, or this module's `logged-gradual`)."""
    path = folder / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "model": "digits-vit",
                "seeds": seeds,
                kind: {**GRADUAL, **knobs, "targets": targets},
                "search": {"algorithm": "grid", "params": {}},
                "resources": resources,
            }
        )
    )
    return path


def _epoch_hook(log_dir: str, seed: int, second_node: int, kill_epoch: int, epoch: int, rank: int) -> None:
    """First in every epoch of every worker: `<rank> <epoch> <node>` appended to `epochs-<seed>.log`
    (node 1: the worker's raylet belongs to the `ray start` process group `second_node`, else 0); at
    `kill_epoch` a worker on the second node dies once, hard, mid-epoch."""
    node = int(second_node > 0 and os.getpgid(os.getppid()) == second_node)
    with open(Path(log_dir) / f"epochs-{seed}.log", "a") as log:
        log.write(f"{rank} {epoch} {node}\n")
    marker = Path(log_dir) / "killed"
    if node == 1 and epoch == kill_epoch and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(10)  # mid-epoch: the previous checkpoint counts once the Train controller has polled it
        os._exit(1)  # a hard worker death, not an exception


class LoggedSpec(GradualSpec):
    log_dir: str = knob("", "where the epoch hook writes its log")
    second_node: int = knob(0, "process group of the second node's `ray start` (0: none)", ge=0)
    kill_epoch: int = knob(-1, "the epoch at which a worker on the second node dies once (-1: never)", ge=-1)


@register_kind
class LoggedGradual(Gradual):
    """The gradual kind (one run through every target) whose workers log each epoch they start, on which
    node, and may kill one: which epochs a fault made a trial do twice is read from the log."""

    name = "logged-gradual"
    spec = LoggedSpec

    def run(self, spec: Any, host: Any) -> None:
        from ovit_ray.training.gradual.run import train_loop

        schedule = spec.schedule()
        hook = partial(_epoch_hook, spec.log_dir, spec.seed, spec.second_node, spec.kill_epoch)
        config = {"spec": spec, "schedule": schedule, "epoch_hook": hook}
        host.train(train_loop, config, spec, schedule.total_epochs, "run0")


def _epochs(log_dir: Path, seed: int, rank: int = 0) -> list[tuple[int, int]]:
    """(epoch, node) of every epoch `rank` started for the trial of `seed`, in order (repeats: re-done work)."""
    lines = (log_dir / f"epochs-{seed}.log").read_text().splitlines()
    return [(int(e), int(n)) for r, e, n in (line.split() for line in lines) if int(r) == rank]


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
    yield "gradual: {window_epochs: " + "9" * 5000 + "}"  # an int past Python's str->int limit
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
            assert sorted(r["seed"] for r in read_rows(tmp_path / "out" / "results.parquet")) == [0, 1]
            wait_until(
                lambda: sum(n["Alive"] for n in ray.nodes()) == 1, 180, "idle worker nodes to be released"
            )
        finally:
            ray.shutdown()


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
    """One 2-worker DDP trial spread over both nodes (0.9 CPU each, one CPU per node); in its second epoch
    the Train worker on the second node dies, and the MLflow server is stopped until the sweep ends."""
    folder = tmp_path_factory.mktemp("ddp")
    path = _sweep_file(
        folder,
        "ddp",
        [0.5, 0.75, 0.9],
        {"workers": 2, "cpus_per_worker": 0.9, "max_failures": 1},
        [0],
        kind="logged-gradual",
        log_dir=str(folder),
        second_node=two_nodes.nodes[1].proc.pid,
        kill_epoch=1,
    )
    out = folder / "out"
    server = MlflowServer(folder / "mlflow").start()
    seen: dict[str, Any] = {}
    ended = threading.Event()

    def inject() -> None:  # the server goes down with the worker (its death comes 10 s after the mark)
        wait_until(lambda: (folder / "killed").exists() or ended.is_set(), 900, "the kill", poll_s=0.2)
        if (folder / "killed").exists():
            server.stop()
            seen["server_stopped"] = True

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    logger = logging.getLogger("ovit_ray.orchestration.tracking.client")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        outcome = run_sweep(load_sweep(path), out, address=two_nodes.address, mlflow_uri=server.url)
        ended.set()
        injector.join(5)
        seen["outbox_after_sweep"] = (out / OUTBOX_NAME).exists()
        server.start()  # back on the same port and folder
        seen["sync_rc"] = main(["sync-mlflow", str(out), "--mlflow-uri", server.url])
        yield outcome, folder, out, server, seen, [r.getMessage() for r in records]
    finally:
        ended.set()
        logger.removeHandler(handler)
        server.stop()


@pytest.mark.ray
@pytest.mark.slow
def test_ddp_trial_spreads_over_two_nodes_and_survives_a_killed_worker(ddp_sweep_with_faults) -> None:
    outcome, folder, out, _, seen, _ = ddp_sweep_with_faults
    assert sorted(_epochs(folder, 0, rank)[0][1] for rank in (0, 1)) == [0, 1]  # a worker on each node
    assert (folder / "killed").exists() and seen.get("server_stopped")
    assert outcome.counts["finished"] == 1 and outcome.counts["failed"] == 0
    assert outcome.totals["trials_finished"] == 1
    rows = read_rows(out / "results.parquet")
    assert sorted(r["target"] for r in rows) == [0.5, 0.75, 0.9] and {r["workers"] for r in rows} == {2}
    epochs = [epoch for epoch, _ in _epochs(folder, 0)]
    assert sorted(set(epochs)) == [0, 1, 2] and len(epochs) - 3 <= 1  # at most one epoch done twice


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_outage_keeps_metrics_locally_and_sync_replays_them(ddp_sweep_with_faults) -> None:
    _, _, out, server, seen, warnings = ddp_sweep_with_faults
    assert seen["outbox_after_sweep"]  # the trial went on while the server was down
    unreachable = [w for w in warnings if "unreachable" in w]
    assert len(unreachable) == 1 and f"ovit-ray sync-mlflow {out}" in unreachable[0]
    assert seen["sync_rc"] == 0 and not (out / OUTBOX_NAME).exists()
    client = MlflowClient(server.url)
    runs = client.search_runs([client.get_experiment_by_name("ovit-ray-sweeps").experiment_id])
    parents = [r for r in runs if r.data.tags.get("ovit.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("ovit.role") == "trial"]
    assert len(parents) == 1 and len(children) == 1 and len(runs) == 2  # continued, not duplicated
    assert children[0].data.tags["ovit.sweep_run"] == parents[0].info.run_id
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parents[0].data.metrics["trials_finished"] == 1
    child = children[0].info.run_id
    top1 = client.get_metric_history(child, "top1")  # per epoch; the outage's epochs replayed by the sync
    assert len(top1) == len({m.step for m in top1}) == 3
    assert sorted(m.step for m in client.get_metric_history(child, "top1_vs_sparsity")) == [50, 75, 90]


@pytest.mark.ray
@pytest.mark.slow
def test_removed_node_trials_are_rescheduled_on_the_remaining_node(
    two_nodes: LocalRayCluster, tmp_path: Path
) -> None:
    """Runs last on the module's cluster: it stops the second node."""
    path = _sweep_file(
        tmp_path,
        "nodes",
        [0.5, 0.75, 0.9],
        {"workers": 1, "cpus_per_worker": 1, "max_failures": 1},
        [0, 1],
        kind="logged-gradual",
        log_dir=str(tmp_path),
        second_node=two_nodes.nodes[1].proc.pid,
    )
    out = tmp_path / "out"

    def remove_node() -> None:
        wait_until(
            lambda: len({p.parent for p in (out / "ray").glob("nodes-*/*/checkpoint_*")}) >= 2,
            900,
            "a checkpoint of each trial",
            poll_s=0.2,
        )
        two_nodes.nodes[1].stop()

    remover = threading.Thread(target=remove_node, daemon=True)
    remover.start()
    outcome = run_sweep(load_sweep(path), out, address=two_nodes.address)
    remover.join(5)
    assert not two_nodes.nodes[1].alive()
    assert outcome.counts["finished"] == 2 and outcome.counts["failed"] == 0
    assert sorted(r["seed"] for r in read_rows(out / "results.parquet")) == [0, 0, 0, 1, 1, 1]
    for seed in (0, 1):
        epochs = [epoch for epoch, _ in _epochs(tmp_path, seed)]
        assert sorted(set(epochs)) == [0, 1, 2] and len(epochs) - 3 <= 1, epochs
    # one trial per node at first; the second node's went on from its checkpoint on the head
    (moved,) = [seed for seed in (0, 1) if _epochs(tmp_path, seed)[0][1] == 1]
    assert _epochs(tmp_path, moved)[-1][1] == 0
    assert list((out / "ray").glob("nodes-*/*/error.txt"))  # lost with the node
