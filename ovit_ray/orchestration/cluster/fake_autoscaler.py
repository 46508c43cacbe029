"""A local head whose autoscaler launches worker nodes in-process (Ray's fake multi-node provider),
its worker types mirroring a real cluster-launcher file: a sweep can be watched scaling up on demand
and back down when idle on one machine (docs/CLUSTER.md, the fault tests) before any cloud node exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ovit_ray.orchestration.cluster.launcher_file import COMMAND_LISTS
from ovit_ray.orchestration.cluster.local import OBJECT_STORE_BYTES, LocalRayCluster, start_head
from ovit_ray.orchestration.common.net import LOOPBACK, free_port

FAKE_GPU = "fake_gpu"
HEAD_TYPE = "ray.head.default"  # the fake provider names its head node type this way


def fake_autoscaling_config(
    cluster_config: Mapping[str, Any],
    gcs_address: str,
    *,
    head_cpus: int = 1,
    cpus_per_worker: int = 1,
    max_workers_per_type: int = 1,
    idle_timeout_minutes: float = 0.1,
) -> dict[str, Any]:
    """Ray's fake multi-node provider config whose worker types mirror ``cluster_config``'s.

    Each worker type keeps its name and GPU count, as ``fake_gpu`` (a custom resource), with a
    laptop-sized CPU count; the head gets no ``fake_gpu``, so GPU tasks force a scale-up.
    """
    head_type = cluster_config["head_node_type"]
    workers = {
        name: {
            "resources": {
                "CPU": cpus_per_worker,
                FAKE_GPU: int(spec.get("resources", {}).get("GPU", 0)),
                "object_store_memory": OBJECT_STORE_BYTES,
            },
            "node_config": {},
            "min_workers": 0,
            "max_workers": min(int(spec.get("max_workers", 1)), max_workers_per_type),
        }
        for name, spec in cluster_config["available_node_types"].items()
        if name != head_type
    }
    return {
        "cluster_name": "ovit-ray-fake",
        "max_workers": sum(t["max_workers"] for t in workers.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "docker": {},
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": head_cpus}, "node_config": {}, "max_workers": 0},
            **workers,
        },
        "head_node_type": HEAD_TYPE,
        **{key: [] for key in _EMPTY_LISTS},
        "file_mounts": {},
        "file_mounts_sync_continuously": False,
    }


_EMPTY_LISTS = (*COMMAND_LISTS, "cluster_synced_files", "rsync_exclude", "rsync_filter")


def start_fake_autoscaling_cluster(
    workdir: str | Path,
    cluster_file: str | Path,
    *,
    idle_timeout_minutes: float = 0.1,
    update_interval_s: int = 1,
    timeout_s: float = 60.0,
) -> LocalRayCluster:
    """A head whose autoscaler launches worker nodes in-process (Ray's fake multi-node provider).

    The provider is given this head's GCS address, so any free port works (not only 6379).
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(cluster_file) as f:
        config = fake_autoscaling_config(
            yaml.safe_load(f), f"{LOOPBACK}:{port}", idle_timeout_minutes=idle_timeout_minutes
        )
    config_path = workdir / "fake_autoscaling.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return start_head(
        workdir,
        num_cpus=config["available_node_types"][HEAD_TYPE]["resources"]["CPU"],
        port=port,
        extra_args=[f"--autoscaling-config={config_path}"],
        extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": str(update_interval_s)},
        timeout_s=timeout_s,
    )
