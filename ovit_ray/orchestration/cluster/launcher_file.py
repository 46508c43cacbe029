"""Offline checks of a Ray cluster-launcher file: Ray's own schema and config preparation, then ours.

Ray's part is what ``ray up`` runs before touching the cloud (``prepare_config`` fills in the
provider defaults, ``validate_config`` checks ``ray-schema.json``): no cloud SDK, no network.
Ours encodes what an ovit-ray sweep needs and what must never ship: GPU worker types for one-worker
and DDP trials, shared storage for results and checkpoints, a dashboard bound to the head only,
token authentication on, and no literal credentials.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ovit_ray.orchestration.common.net import binds_all_interfaces
from ovit_ray.orchestration.common.secrets import is_secret_key
from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping, short_repr

_Container = TypeVar("_Container", dict, list)

STORAGE_VAR = "OVIT_RAY_STORAGE"
SHARED_MOUNTS_VAR = "OVIT_RAY_SHARED_MOUNTS"  # colon-separated mount points documented as shared
SHARED_SCHEMES = ("s3://", "gs://", "hdfs://")
COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
_ASSIGN = re.compile(r"(?:^|[\s;&|(])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|)]*)")
_BIND_FLAG = re.compile(r"--(dashboard-host|host)(?:=|\s+)(\S+)")
_SECRET_PATTERNS = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a password in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
}


def _covers_everything(cidrs: list[str]) -> bool:
    """True when the ranges together cover every IPv4 or every IPv6 address (0.0.0.0/1 + 128.0.0.0/1 too)."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(str(cidr).strip(), strict=False))
        except ValueError:
            continue
    v4 = [n for n in nets if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in nets if isinstance(n, ipaddress.IPv6Network)]
    full_v4 = any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v4))
    return full_v4 or any(n.prefixlen == 0 for n in ipaddress.collapse_addresses(v6))


@dataclass(frozen=True)
class Problem:
    """One finding: where (a dotted key), what value, why it is a problem."""

    key: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {short_repr(self.value)}: {self.reason}"


def load_cluster_file(path: str | Path) -> dict[str, Any]:
    """``yaml.safe_load`` of a cluster file; a clear ValueError if it is not a mapping."""
    return read_yaml_mapping(path, "cluster file")


def validate_cluster_config(config: dict[str, Any]) -> list[Problem]:
    """All problems with ``config``: Ray's validation first; ours run on the prepared config
    (so defaults Ray would fill in, such as a dashboard on 0.0.0.0, are checked too)."""
    prepared, ray_problem = ray_validate(config)
    if ray_problem is not None:  # our rules that need no prepared config still run: report everything
        return [ray_problem, *_exposure_problems(config), *_auth_problems(config), *_secret_problems(config)]
    return [
        *_gpu_problems(prepared),
        *_storage_problems(prepared),
        *_exposure_problems(prepared),
        *_auth_problems(prepared),
        *_secret_problems(config),
    ]


def ray_validate(config: dict[str, Any]) -> tuple[dict[str, Any], Problem | None]:
    """Ray's ``prepare_config`` + ``validate_config`` (what ``ray up`` runs before the cloud)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except jsonschema.ValidationError as err:
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        value = err.instance
        if err.validator == "additionalProperties":  # name the unknown keys, not the whole mapping
            value = sorted(set(value) - set(err.schema.get("properties", {})))
        return config, Problem(key, value, f"Ray schema: {err.message}")
    except (
        ValueError,
        KeyError,
        RuntimeError,
        NotImplementedError,
        AssertionError,
        TypeError,
        AttributeError,
        IndexError,
    ) as err:  # Ray's preparation assumes well-typed sections
        return config, Problem("(config)", "", f"Ray config check: {err}")
    return prepared, None


def _gpu_problems(config: dict[str, Any]) -> Iterator[Problem]:
    head = config["head_node_type"]
    gpus = {
        name: spec.get("resources", {}).get("GPU", 0)
        for name, spec in config["available_node_types"].items()
        if name != head
    }
    key = "available_node_types"
    if not any(gpus.values()):
        yield Problem(key, sorted(gpus), "no worker node type declares resources.GPU (trials need GPUs)")
        return
    if 1 not in gpus.values():
        yield Problem(key, gpus, "no single-GPU worker type (resources.GPU: 1) for one-worker trials")
    if not any(n > 1 for n in gpus.values()):
        yield Problem(key, gpus, "no multi-GPU worker type (resources.GPU > 1) for DDP trials")
    for name, n in gpus.items():
        spec = config["available_node_types"][name]
        if n and spec.get("min_workers", 0) > 0:
            yield Problem(
                f"{key}.{name}.min_workers", spec["min_workers"], "GPU nodes must scale to zero when idle"
            )


def _storage_problems(config: dict[str, Any]) -> Iterator[Problem]:
    found = {name: (key, value) for key, (name, value) in _assignments(config)}
    if STORAGE_VAR not in found:
        yield Problem(STORAGE_VAR, None, "not exported by any command (an s3://, gs:// or hdfs:// URI)")
        return
    key, storage = found[STORAGE_VAR]
    if storage.startswith(SHARED_SCHEMES):
        return
    mounts = [m.rstrip("/") for m in found.get(SHARED_MOUNTS_VAR, ("", ""))[1].split(":") if m]
    if storage.startswith("/") and any(storage == m or storage.startswith(m + "/") for m in mounts):
        return
    yield Problem(
        f"{key} ({STORAGE_VAR})",
        storage,
        "storage must be shared by all nodes: an s3://, gs:// or hdfs:// URI, or a path under a "
        f"mount listed in {SHARED_MOUNTS_VAR} (a head-local path loses worker checkpoints)",
    )


def _exposure_problems(config: dict[str, Any]) -> Iterator[Problem]:
    for key, command in _commands(config):
        for flag, value in _BIND_FLAG.findall(command):
            if binds_all_interfaces(value):
                yield Problem(key, f"--{flag}={value}", "binds to all interfaces; use 127.0.0.1 (head only)")
    provider = _of_type(config.get("provider"), dict)
    group = _of_type(provider.get("security_group"), dict)
    perms = _of_type(group.get("IpPermissions"), list)
    for i, perm in enumerate(p for p in perms if isinstance(p, dict)):
        ports = (perm.get("FromPort"), perm.get("ToPort"))
        ranges = [r for key in ("IpRanges", "Ipv6Ranges") for r in perm.get(key) or [] if isinstance(r, dict)]
        public = _covers_everything([r.get("CidrIp") or r.get("CidrIpv6") or "" for r in ranges])
        if public and ports != (22, 22):
            yield Problem(
                f"provider.security_group.IpPermissions.{i}",
                ports,
                "opens a port other than SSH to every address (0.0.0.0/0, ::/0 or ranges covering them)",
            )


def _of_type(value: Any, kind: type[_Container]) -> _Container:
    """`value` when it has the expected shape, else an empty one (a badly typed section has no problems
    of its own to report here: the schema check names it)."""
    return value if isinstance(value, kind) else kind()


def _auth_problems(config: dict[str, Any]) -> Iterator[Problem]:
    for key, (name, value) in _assignments(config):
        if name == "RAY_AUTH_MODE" and value != "token":
            yield Problem(key, f"{name}={value}", "token authentication must stay on (RAY_AUTH_MODE=token)")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = _of_type(config.get(key), list)
        if not any("RAY_AUTH_MODE=token" in str(c) for c in commands):
            yield Problem(key, config.get(key, []), "does not export RAY_AUTH_MODE=token before `ray start`")


def _secret_problems(config: dict[str, Any]) -> Iterator[Problem]:
    for key, text in _strings(config):
        for what, pattern in _SECRET_PATTERNS.items():
            if pattern.search(text):
                yield Problem(key, "<redacted>", f"contains {what}; pass credentials through the environment")
    for key, (name, value) in _assignments(config):
        if (
            is_secret_key(name)
            and not name.endswith(("_PATH", "_FILE"))
            and value
            and not value.startswith("$")
        ):
            yield Problem(key, f"{name}=<redacted>", "a literal credential; read it from the environment")
    for key in _secret_fields(config):
        yield Problem(key, "<redacted>", "a literal credential; use an instance profile / workload identity")


def _secret_fields(node: Any, key: str = "") -> Iterator[str]:
    """Mapping entries whose key names a credential and whose value is a literal (e.g. provider.aws_credentials)."""
    if isinstance(node, dict):
        for k, v in node.items():
            where = f"{key}.{k}" if key else str(k)
            if where == "file_mounts":  # remote path -> local path (e.g. the auth token's file), not values
                continue
            if is_secret_key(str(k)) and isinstance(v, str | int) and str(v) and not str(v).startswith("$"):
                yield where
            else:
                yield from _secret_fields(v, where)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _secret_fields(v, f"{key}.{i}")


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")
    elif isinstance(node, str):
        yield key, node


def _commands(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every shell command Ray will run, with its dotted key (node-type overrides included), and the
    docker run options (`-e NAME=value` passes a variable into every container)."""
    for key, text in _strings(config):
        if any(part in COMMAND_LISTS or part.endswith("run_options") for part in key.split(".")):
            yield key, text


def _assignments(config: dict[str, Any]) -> Iterator[tuple[str, tuple[str, str]]]:
    """``(key, (NAME, value))`` for every ``NAME=value`` in a command."""
    for key, command in _commands(config):
        for name, raw in _ASSIGN.findall(command):
            yield key, (name, raw.strip("'\""))
