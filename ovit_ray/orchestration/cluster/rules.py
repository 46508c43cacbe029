"""The rules every cluster file kind shares: Ray cluster-launcher YAML and KubeRay manifests.

Each kind's module finds the values (shell commands and security groups; container env entries, worker
groups and Services) and asks these functions for the verdict, so shared storage, token authentication,
a public source range, a literal credential and GPU nodes that scale to zero mean one thing everywhere.

"Public" (a source range that exposes a port): any address outside the blocks IANA's special-purpose
registries mark as not globally reachable and that cannot be a packet's source on the internet
(`NOT_PUBLIC`). A set of rules is judged by what its ranges reach together, so splitting 0.0.0.0/0
into 0.0.0.0/1 and 128.0.0.0/1 changes nothing: each piece already reaches public addresses.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ovit_ray.orchestration.common.secrets import holds_secret
from ovit_ray.orchestration.common.yaml_files import short_repr

STORAGE_VAR = "OVIT_RAY_STORAGE"
SHARED_MOUNTS_VAR = "OVIT_RAY_SHARED_MOUNTS"  # colon-separated mount points documented as shared
SHARED_SCHEMES = ("s3://", "gs://", "hdfs://")
AUTH_VAR = "RAY_AUTH_MODE"
TOKEN_VAR = "RAY_AUTH_TOKEN"

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_Container = TypeVar("_Container", dict, list)
NOT_PUBLIC: tuple[_Net, ...] = tuple(
    ipaddress.ip_network(block)
    for block in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "224.0.0.0/3",  # multicast, reserved, broadcast
        "::/127",  # unspecified and loopback
        "100::/64",  # discard-only
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)

# NAME=value in shell text, options and URL queries: `export A=b`, `-e A=b`, `--env=A=b`, `?a=b&c=d`.
_ASSIGN = re.compile(
    r"(?:^|[\s;&|(=?])(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|[^\s;&|)]*)"
)
# One setting per line as configuration files write it: `aws_secret_access_key = X`, `password: X`.
_LINE_ASSIGN = re.compile(
    r"^[ \t]*(?:-[ \t]+)?([A-Za-z_][\w.-]*)[ \t]*(?:=|:(?=[ \t]))[ \t]*(\S.*?)[ \t]*$", re.M
)
_BASE64 = re.compile(r"[A-Za-z0-9+/\s]{16,}={0,2}")
SECRET_PATTERNS = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a password in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I),
    "a Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "a GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{60,})\b"),
    "a Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "a Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
}
LITERAL_CREDENTIAL = (
    "a literal credential; pass it through the environment, a Kubernetes Secret (valueFrom.secretKeyRef) "
    "or workload identity, never the file"
)


@dataclass(frozen=True)
class Problem:
    """One finding: where (a dotted key, and the document of a multi-document file), what value, why."""

    key: str
    value: Any
    reason: str
    where: str = ""

    def __str__(self) -> str:
        line = f"{self.key}: {short_repr(self.value)}: {self.reason}"
        return f"{self.where}: {line}" if self.where else line


@dataclass(frozen=True)
class Setting:
    """An environment variable given a value: ``NAME=value`` in a command or an env entry. ``value``
    None: it comes from elsewhere (``secret`` True when that is a Kubernetes Secret)."""

    key: str
    name: str
    value: str | None
    secret: bool = False

    def shown(self) -> str:
        return f"{self.name}={'<from a reference>' if self.value is None else self.value}"


@dataclass(frozen=True)
class WorkerGroup:
    """A kind of worker node: how many GPUs each has, and every setting that keeps some running."""

    name: str
    gpus: float
    floors: tuple[tuple[str, Any], ...]  # (dotted key, value): min_workers, minReplicas, replicas


def of_type(value: Any, kind: type[_Container]) -> _Container:
    """`value` when it has the expected shape, else an empty one (a badly typed section has no problems
    of its own to report here: Ray's schema or Kubernetes' validation names it)."""
    return value if isinstance(value, kind) else kind()


def strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """Every string value under ``node`` with its dotted key."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{key}.{i}" if key else str(i))
    elif isinstance(node, str):
        yield key, node


def assignments(key: str, text: str) -> Iterator[Setting]:
    """Every ``NAME=value`` in a shell command or an option list entry."""
    for name, raw in _ASSIGN.findall(text):
        yield Setting(key, name, raw.strip("'\""))


def _literal(value: Any) -> bool:
    """A value given in the file itself: not empty, not a ``$VARIABLE``, not a file path."""
    text = str(value).strip().strip("'\"")
    return bool(text) and not text.startswith(("$", "/", "~"))


# --- literal credentials -------------------------------------------------------------------------


def secret_problems(node: Any, key: str = "") -> Iterator[Problem]:
    """Literal credentials anywhere in ``node``: mapping entries named like a credential and
    ``{name: ..., value: ...}`` entries (Kubernetes env, AWS tags), then ``NAME=value`` settings and
    known key formats inside any string (base64 text decoded first). One line per place; values are
    never echoed."""
    reported = set()
    for problem in _field_secrets(node, key):
        reported.add(problem.key)
        yield problem
    for where, text in strings(node, key):
        if where not in reported:
            yield from _text_secrets(where, text)


def _text_secrets(key: str, text: str, decoded: bool = False) -> Iterator[Problem]:
    """Named settings (``NAME=value``, ``name = value``, ``name: value``) first; a known key format is
    reported only where no named setting already is."""
    pairs = [(s.name, s.value) for s in assignments(key, text)] + _LINE_ASSIGN.findall(text)
    named = sorted({name for name, value in pairs if holds_secret(name) and _literal(value)})
    for name in named:
        yield Problem(key, f"{name}=<redacted>", LITERAL_CREDENTIAL)
    if not named:
        for what, pattern in SECRET_PATTERNS.items():
            if pattern.search(text):
                yield Problem(key, "<redacted>", f"contains {what}; pass credentials through the environment")
    plain = _decoded(text) if not decoded else None
    if plain is not None:
        yield from _text_secrets(key, plain, decoded=True)


def _decoded(text: str) -> str | None:
    """The text inside a base64 value (EC2 ``UserData`` is often written that way), else None."""
    if not _BASE64.fullmatch(text.strip()):
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _field_secrets(node: Any, key: str) -> Iterator[Problem]:
    if isinstance(node, dict):
        name = next((node[k] for k in ("name", "Name", "key", "Key") if isinstance(node.get(k), str)), None)
        value_key = next((k for k in ("value", "Value") if k in node), None)
        if name is not None and value_key is not None and holds_secret(name) and _literal(node[value_key]):
            yield Problem(
                f"{key}.{value_key}" if key else value_key, f"{name}=<redacted>", LITERAL_CREDENTIAL
            )
        for k, v in node.items():
            where = f"{key}.{k}" if key else str(k)
            if holds_secret(str(k)) and isinstance(v, str | int) and _literal(v):
                yield Problem(where, "<redacted>", LITERAL_CREDENTIAL)
            else:
                yield from _field_secrets(v, where)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _field_secrets(v, f"{key}.{i}" if key else str(i))


# --- shared storage --------------------------------------------------------------------------------


def storage_problems(settings: Iterable[Setting], missing: str) -> Iterator[Problem]:
    """``OVIT_RAY_STORAGE`` must name storage every node sees: an s3://, gs:// or hdfs:// URI, or a path
    under a mount listed in ``OVIT_RAY_SHARED_MOUNTS`` (a node-local path loses worker checkpoints).
    The last setting of a name wins, as in a shell."""
    found = {s.name: s for s in settings}
    storage = found.get(STORAGE_VAR)
    if storage is None:
        yield Problem(STORAGE_VAR, None, missing)
        return
    where = f"{storage.key} ({STORAGE_VAR})"
    if storage.value is None:
        yield Problem(where, storage.shown(), "give the storage URI as a value this check can read")
        return
    if storage.value.startswith(SHARED_SCHEMES):
        return
    mounts_setting = found.get(SHARED_MOUNTS_VAR)
    mounts = [m.rstrip("/") for m in ((mounts_setting and mounts_setting.value) or "").split(":") if m]
    if storage.value.startswith("/") and any(
        storage.value == m or storage.value.startswith(m + "/") for m in mounts
    ):
        return
    yield Problem(
        where,
        storage.value,
        "storage must be shared by all nodes: an s3://, gs:// or hdfs:// URI, or a path under a "
        f"mount listed in {SHARED_MOUNTS_VAR} (a head-local path loses worker checkpoints)",
    )


# --- token authentication ---------------------------------------------------------------------------


def auth_mode_problems(settings: Iterable[Setting]) -> Iterator[Problem]:
    """``RAY_AUTH_MODE`` set to anything but ``token``, anywhere."""
    for s in settings:
        if s.name == AUTH_VAR and s.value != "token":
            yield Problem(s.key, s.shown(), "token authentication must stay on (RAY_AUTH_MODE=token)")


def sets_token_auth(settings: Iterable[Setting]) -> bool:
    return any(s.name == AUTH_VAR and s.value == "token" for s in settings)


# --- exposure ---------------------------------------------------------------------------------------


def public_sources(cidrs: Iterable[Any]) -> list[str]:
    """The ranges among ``cidrs`` that reach a public address (see the module docstring); entries that
    are not ranges are left to the schema checks."""
    found = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(str(cidr).strip(), strict=False)
        except ValueError:
            continue
        if _reaches_public(net):
            found.append(str(net))
    return found


def _reaches_public(net: _Net) -> bool:
    left: list[_Net] = [net]
    for block in NOT_PUBLIC:
        if block.version != net.version:
            continue
        rest: list[_Net] = []
        for part in left:
            if part.subnet_of(block):  # type: ignore[arg-type]  # same version, checked above
                continue
            if block.subnet_of(part):  # type: ignore[arg-type]
                rest.extend(part.address_exclude(block))  # type: ignore[arg-type]
            else:
                rest.append(part)  # CIDR blocks either nest or are disjoint
        left = rest
    return bool(left)


# --- GPU workers --------------------------------------------------------------------------------------


def gpu_problems(groups: list[WorkerGroup], key: str, noun: str, declares: str) -> Iterator[Problem]:
    """A single-GPU kind for one-worker trials, a multi-GPU kind for DDP trials, and GPU kinds that
    keep nothing running while idle (min_workers / minReplicas / replicas all 0)."""
    gpus = {g.name: g.gpus for g in groups}
    if not any(gpus.values()):
        yield Problem(key, sorted(gpus), f"no {noun} declares {declares} (trials need GPUs)")
        return
    if 1 not in gpus.values():
        yield Problem(key, gpus, f"no single-GPU {noun} ({declares}: 1) for one-worker trials")
    if not any(n > 1 for n in gpus.values()):
        yield Problem(key, gpus, f"no multi-GPU {noun} ({declares} > 1) for DDP trials")
    for group in groups:
        for where, floor in group.floors:
            if group.gpus and isinstance(floor, int | float) and floor > 0:
                yield Problem(where, floor, "GPU nodes must scale to zero when idle")


def group_floors(spec: Mapping[str, Any], key: str, names: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """The ``names`` of ``spec`` that are set, as (dotted key, value)."""
    return tuple((f"{key}.{name}", spec[name]) for name in names if name in spec)
