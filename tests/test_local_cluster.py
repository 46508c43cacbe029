"""Local multi-node Ray on 127.0.0.1: the fake autoscaler launches and releases a worker node
mirroring cluster.yaml's GPU types; two `ray start` nodes each run a task, each node in its own working
and temp folder (as on separate machines), all gone once the cluster is stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovit_ray.orchestration.cluster.fake_autoscaler import FAKE_GPU, start_fake_autoscaling_cluster
from ovit_ray.orchestration.cluster.local import start_two_nodes
from ovit_ray.orchestration.common.net import LOOPBACK, wait_until

ray = pytest.importorskip("ray")
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]


def _alive() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


def test_fake_autoscaler_scales_up_on_demand_and_down_when_idle(tmp_path: Path) -> None:
    with start_fake_autoscaling_cluster(tmp_path, REPO / "cluster.yaml") as cluster, cluster.driver_env():
        ray.init(address=cluster.address)
        try:
            assert len(_alive()) == 1  # the head alone; it has no fake_gpu

            @ray.remote(num_cpus=0, resources={FAKE_GPU: 8})
            def ddp_trial() -> str:
                return ray.get_runtime_context().get_node_id()

            node_id = ray.get(ddp_trial.remote(), timeout=120)
            nodes = {n["NodeID"]: n for n in _alive()}
            assert nodes[node_id]["Resources"][FAKE_GPU] == 8  # a node of cluster.yaml's gpu8 type
            assert {n["NodeManagerAddress"] for n in nodes.values()} == {LOOPBACK}
            wait_until(lambda: len(_alive()) == 1, 120, "the idle worker node to be released")
        finally:
            ray.shutdown()


def test_two_ray_start_nodes_each_run_a_task(tmp_path: Path) -> None:
    with start_two_nodes(tmp_path) as cluster, cluster.driver_env():
        started = list(cluster.nodes)
        temps = [node.temp_dir for node in started]
        ray.init(address=cluster.address)
        try:
            wait_until(lambda: len(_alive()) == 2, 120, "the second node to join")
            nodes = _alive()
            assert {n["NodeManagerAddress"] for n in nodes} == {LOOPBACK}
            # each node's sockets (and session, logs, trial working folders) in its own temp folder
            sessions = {n["NodeID"]: Path(n["RayletSocketName"]).parents[1] for n in nodes}
            assert sorted(str(s.parent) for s in sessions.values()) == sorted(map(str, temps))

            @ray.remote(num_cpus=1)
            def where() -> tuple[str, str]:
                return ray.get_runtime_context().get_node_id(), os.getcwd()

            pinned = [
                where.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote()
                for n in nodes
            ]
            ran = dict(ray.get(pinned, timeout=120))
            assert sorted(ran) == sorted(n["NodeID"] for n in nodes)
            assert sorted(ran.values()) == [str(tmp_path / "head"), str(tmp_path / "node1")]
        finally:
            ray.shutdown()
    assert not any(node.alive() for node in started)  # stopped: our process groups only
    assert not any(temp.exists() for temp in temps)  # and their temp folders removed
