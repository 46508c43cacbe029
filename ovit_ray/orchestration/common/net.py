"""Local network helpers shared by the MLflow server and the local Ray clusters: free ports,
readiness polling, who listens on a port, whether an address answers, and telling a bind to every
interface from a bind to one."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK, avoid: tuple[int, ...] = ()) -> list[int]:
    """``count`` distinct free ports (held open together while chosen: separate ``free_port()``
    calls can return the same port twice, and Ray refuses a port given to two components)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in avoid:
                ports.append(port)
        return ports


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Something accepts connections on ``host:port`` (a server is up); IPv4 or IPv6."""
    return unreachable(host, port, 0.5) is None


def listening_pids(port: int) -> set[int] | None:
    """The processes (of any user whose `/proc/PID/fd` we may read) listening on TCP `port`, any address;
    None where `/proc/net/tcp` does not exist (not Linux): who owns the port cannot be told there."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].exists():
        return None
    sockets = set()
    for table in (t for t in tables if t.exists()):
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                sockets.add(f"socket:[{fields[9]}]")
    pids = set()
    for entry in Path("/proc").iterdir():
        if sockets and entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone, or another user's process
                if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                    pids.add(int(entry.name))
    return pids


def unreachable(host: str, port: int, timeout_s: float) -> str | None:
    """Why nothing accepts TCP connections at `host:port` within `timeout_s` (refused, no route, unknown
    host, timed out), or None when something does."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except socket.gaierror as err:
        return f"unknown host: {err.strerror}"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as err:
        return err.strerror or type(err).__name__


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll ``predicate()`` until true; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def binds_all_interfaces(host: str) -> bool:
    """Every spelling of "all interfaces": 0.0.0.0, 0, 0.0, 0x0, ::, ::0, [::], 0:0::0, empty, *, and the
    IPv4-mapped ::ffff:0.0.0.0 (a dual-stack socket bound there takes every IPv4 interface)."""
    host = host.strip().strip("'\"").strip("[]").rstrip(".")
    if host in ("", "*"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return address.is_unspecified or (mapped is not None and mapped.is_unspecified)
    try:
        return socket.inet_aton(host) == bytes(4)  # the shorthand IPv4 forms bind(2) also accepts
    except OSError:
        return False
