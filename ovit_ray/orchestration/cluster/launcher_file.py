"""Offline checks of a Ray cluster-launcher file: Ray's own schema and config preparation, then ours.

Ray's part is what ``ray up`` runs before touching the cloud (``prepare_config`` fills in the
provider defaults, ``validate_config`` checks ``ray-schema.json``): no cloud SDK, no network.
Ours encodes what an ovit-ray sweep needs and what must never ship (the verdicts live in `rules`,
shared with KubeRay manifests): GPU worker types for one-worker and DDP trials, shared storage for
results and checkpoints, a dashboard bound to the head only, no port but SSH open to public
addresses, token authentication on, and no literal credentials anywhere in the file.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

from ovit_ray.orchestration.cluster.rules import (
    Problem,
    Setting,
    WorkerGroup,
    assignments,
    auth_mode_problems,
    gpu_problems,
    group_floors,
    of_type,
    public_sources,
    secret_problems,
    sets_token_auth,
    storage_problems,
    strings,
)
from ovit_ray.orchestration.common.net import binds_all_interfaces

COMMAND_LISTS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
_BIND_FLAG = re.compile(r"--(dashboard-host|host)(?:=|\s+)(\S+)")


def validate_cluster_config(config: dict[str, Any]) -> list[Problem]:
    """All problems with ``config``: Ray's validation first; ours run on the prepared config
    (so defaults Ray would fill in, such as a dashboard on 0.0.0.0, are checked too)."""
    prepared, ray_problem = ray_validate(config)
    if ray_problem is not None:  # our rules that need no prepared config still run: report everything
        return [ray_problem, *_exposure_problems(config), *_auth_problems(config), *secret_problems(config)]
    return [
        *_gpu_problems(prepared),
        *storage_problems(
            _settings(prepared), "not exported by any command (an s3://, gs:// or hdfs:// URI)"
        ),
        *_exposure_problems(prepared),
        *_auth_problems(prepared),
        *secret_problems(config),
    ]


def ray_validate(config: dict[str, Any]) -> tuple[dict[str, Any], Problem | None]:
    """Ray's ``prepare_config`` + ``validate_config`` (what ``ray up`` runs before the cloud)."""
    import jsonschema

    from ovit_ray.orchestration.common.ray_private import prepare_launcher_config

    try:
        prepared = prepare_launcher_config(copy.deepcopy(config))
    except jsonschema.ValidationError as err:
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        value = err.instance
        if err.validator == "additionalProperties":  # name the unknown keys, not the whole mapping
            value = sorted(set(value) - set(err.schema.get("properties", {})))
        return config, Problem(key, value, f"Ray schema: {err.message}")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError, AssertionError) as err:
        return config, Problem("(config)", "", f"Ray config check: {err}")  # it assumes well-typed sections
    return prepared, None


def _gpu_problems(config: dict[str, Any]) -> Iterator[Problem]:
    head = config["head_node_type"]
    groups = [
        WorkerGroup(
            name,
            spec.get("resources", {}).get("GPU", 0),
            group_floors(spec, f"available_node_types.{name}", ("min_workers",)),
        )
        for name, spec in config["available_node_types"].items()
        if name != head
    ]
    yield from gpu_problems(groups, "available_node_types", "worker node type", "resources.GPU")


def _exposure_problems(config: dict[str, Any]) -> Iterator[Problem]:
    for key, command in _commands(config):
        for flag, value in _BIND_FLAG.findall(command):
            if binds_all_interfaces(value):
                yield Problem(key, f"--{flag}={value}", "binds to all interfaces; use 127.0.0.1 (head only)")
    provider = of_type(config.get("provider"), dict)
    group = of_type(provider.get("security_group"), dict)
    perms = of_type(group.get("IpPermissions"), list)
    for i, perm in enumerate(perms):
        if not isinstance(perm, dict):
            continue
        ports = (perm.get("FromPort"), perm.get("ToPort"))
        all_traffic = str(perm.get("IpProtocol", "tcp")).lower() in ("-1", "all")
        ranges = [r for key in ("IpRanges", "Ipv6Ranges") for r in perm.get(key) or [] if isinstance(r, dict)]
        public = public_sources(r.get("CidrIp") or r.get("CidrIpv6") or "" for r in ranges)
        if public and (all_traffic or ports != (22, 22)):
            yield Problem(
                f"provider.security_group.IpPermissions.{i}",
                "all traffic" if all_traffic else ports,
                f"opens a port other than SSH to public addresses ({', '.join(public)}); allow only "
                "private ranges or security groups, and reach the head through an SSH tunnel",
            )


def _auth_problems(config: dict[str, Any]) -> Iterator[Problem]:
    yield from auth_mode_problems(_settings(config))
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = of_type(config.get(key), list)
        if not sets_token_auth(s for i, c in enumerate(commands) for s in assignments(f"{key}.{i}", str(c))):
            yield Problem(key, config.get(key, []), "does not export RAY_AUTH_MODE=token before `ray start`")


def _commands(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every shell command Ray will run, with its dotted key (node-type overrides included), and the
    docker run options (`-e NAME=value` passes a variable into every container)."""
    for key, text in strings(config):
        if any(part in COMMAND_LISTS or part.endswith("run_options") for part in key.split(".")):
            yield key, text


def _settings(config: dict[str, Any]) -> Iterator[Setting]:
    """Every ``NAME=value`` in a command or a docker run option."""
    for key, command in _commands(config):
        yield from assignments(key, command)
