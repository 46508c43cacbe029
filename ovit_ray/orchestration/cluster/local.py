"""Multi-node Ray clusters on one machine (127.0.0.1), for tests and for trying cluster.yaml locally.

Why not ``ray.cluster_utils.AutoscalingCluster``: in the 2.60 wheel it needs a config file that
is not shipped, and it runs ``ray stop --force``, which kills every Ray process on the machine.
Here every node is a ``ray start --block`` process started in its own process group, so stopping
a cluster signals exactly the processes it started (the raylet, GCS, monitor, the fake provider's
worker nodes and their workers all inherit that group) and nobody else's.

Every node also gets its own working folder and its own Ray temp folder, as on separate machines: a file a
trial leaves in its node's temp (session) folder is not visible from another node, so a test on two local
nodes finds what a real cluster would lose (and the machine's shared ``/tmp/ray`` is left alone).

Every cluster gets its own token file: the nodes and the drivers that join them use token
authentication (``RAY_AUTH_MODE=token``) without touching ``~/.ray/auth_token``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.net import LOOPBACK, free_port, free_ports, port_in_use, wait_until
from ovit_ray.orchestration.common.ray_session import ray_env

OBJECT_STORE_BYTES = 200 * 1024**2  # per node; tests move little data and share /dev/shm


@dataclass
class RayNodeProcess:
    """One ``ray start --block`` process and its process group (Ray's own processes inherit it)."""

    proc: subprocess.Popen[bytes]
    log: Path
    temp_dir: Path | None = None  # the node's own Ray temp folder, removed once the node is stopped

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the group (``--block`` shuts its node down), SIGKILL whatever is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace_s)
        deadline = time.monotonic() + grace_s
        while _group_alive(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class LocalRayCluster:
    """Nodes we started; ``address`` and ``env`` are what a driver needs to join."""

    address: str
    workdir: Path
    env: dict[str, str]
    nodes: list[RayNodeProcess] = field(default_factory=list)

    def add_node(
        self,
        num_cpus: int = 1,
        resources: Mapping[str, int] | None = None,
        extra_args: list[str] | None = None,
    ) -> RayNodeProcess:
        """Join one more ``ray start`` node (node address 127.0.0.1) to this cluster."""
        # `ray start --address` refuses to join with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with
        # 1 it rewrites 127.0.0.1 (both the address and --node-ip-address) to the machine's
        # outward address, where the head's GCS does not listen. So: the IPv4-mapped form of
        # 127.0.0.1 to reach the GCS (same socket, not rewritten), and Ray's start hook to pin
        # the node address back to 127.0.0.1.
        port = self.address.rsplit(":", 1)[1]
        args = ["--address", f"[::ffff:{LOOPBACK}]:{port}", "--num-cpus", str(num_cpus)]
        args += ["--object-store-memory", str(OBJECT_STORE_BYTES)]
        args += ["--dashboard-agent-listen-port", str(free_port())]
        if resources:
            args += ["--resources", json.dumps(dict(resources))]
        args += extra_args or []
        env = {
            **self.env,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
            "RAY_START_HOOK": f"{__name__}.pin_loopback_node_ip",
        }
        node = _start_node(args, env, self.workdir, f"node{len(self.nodes)}")
        self.nodes.append(node)
        return node

    def stop(self) -> None:
        """Workers first, then the head: only the process groups this object started."""
        for node in reversed(self.nodes):
            node.stop()
        self.nodes.clear()

    def driver_env(self) -> contextlib.AbstractContextManager[None]:
        """Environment for a driver process in this one (set before ``ray.init(address=...)``)."""
        return ray_env(self.env)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def pin_loopback_node_ip(ray_params: Any, head: bool) -> None:
    """``RAY_START_HOOK`` for joining nodes: report 127.0.0.1 (see ``LocalRayCluster.add_node``)."""
    ray_params.node_ip_address = LOOPBACK


def cluster_env(workdir: Path) -> dict[str, str]:
    """Token auth with a token private to this cluster; nodes report 127.0.0.1."""
    token = workdir / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }


def start_head(
    workdir: str | Path,
    *,
    num_cpus: int = 1,
    port: int | None = None,
    extra_args: list[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> LocalRayCluster:
    """A ``ray start --head`` on 127.0.0.1 with free ports (no dashboard: tests do not need it)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    dashboard_port, agent_port = free_ports(2, avoid=(port,))
    env = cluster_env(workdir)
    args = ["--head", "--port", str(port), "--num-cpus", str(num_cpus), "--include-dashboard", "false"]
    args += ["--dashboard-port", str(dashboard_port), "--object-store-memory", str(OBJECT_STORE_BYTES)]
    args += ["--dashboard-agent-listen-port", str(agent_port), "--disable-usage-stats", *(extra_args or [])]
    head = _start_node(args, {**env, **(extra_env or {})}, workdir, "head")
    cluster = LocalRayCluster(f"{LOOPBACK}:{port}", workdir, env, [head])
    try:
        wait_until(lambda: port_in_use(port) or not head.alive(), timeout_s, f"the Ray head on port {port}")
        if not head.alive():
            raise RuntimeError(f"ray start --head exited with {head.proc.returncode}; see {head.log}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_two_nodes(workdir: str | Path, num_cpus: int = 1) -> LocalRayCluster:
    """Head plus one worker node, both ``ray start`` processes on 127.0.0.1."""
    cluster = start_head(workdir, num_cpus=num_cpus)
    try:
        cluster.add_node(num_cpus=num_cpus)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_node(args: list[str], env: Mapping[str, str], workdir: Path, name: str) -> RayNodeProcess:
    """``ray start`` in the working folder ``<workdir>/<name>`` (its output in ``<name>.log``) with a temp
    folder of its own unless ``args`` name one (short, in the system temp folder: Ray's socket paths inside
    it have a length limit)."""
    ray_cli = Path(sys.executable).with_name("ray")
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    temp = None
    if not any(arg.split("=", 1)[0] == "--temp-dir" for arg in args):
        temp = Path(tempfile.mkdtemp(prefix=f"ovray-{name}-"))
        args = [*args, "--temp-dir", str(temp)]
    cmd = [str(ray_cli), "start", "--node-ip-address", LOOPBACK, "--block", *args]
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=folder,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() signals only what we started
        )
    return RayNodeProcess(proc, log, temp)


def group_processes(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc (Linux): e.g. a node's Ray
    workers, for fault-injection tests that kill one. Zombies whose parent exited may never be
    reaped in containers without an init process, so they do not count."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _group_alive(pgid: int) -> bool:
    """Any live process left in the group?"""
    if not Path("/proc").is_dir():  # not Linux: fall back to the signal check
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    return bool(group_processes(pgid))
