"""Local network helpers shared by the MLflow server and the local Ray clusters: free ports,
readiness polling, and telling a bind to every interface from a bind to one."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    """Something accepts connections on ``host:port`` (a server is up)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll ``predicate()`` until true; ``TimeoutError`` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def binds_all_interfaces(host: str) -> bool:
    """Every spelling of "all interfaces": 0.0.0.0, 0, 0.0, 0x0, ::, ::0, [::], 0:0::0, empty, *."""
    host = host.strip().strip("'\"").strip("[]")
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        pass
    try:
        return socket.inet_aton(host) == bytes(4)  # the shorthand IPv4 forms bind(2) also accepts
    except OSError:
        return False
