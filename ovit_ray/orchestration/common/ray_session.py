"""The one way our commands get a Ray instance: join `address` or start a private local one, keep our
stop-signal handlers, ask for token authentication, and on the way out shut down only what we started.

Why: the sweep called `ray.shutdown()` even when its caller (a notebook, a test, `compare-strategies`
around several runs) had started Ray, and `ovit-ray train` left the instance it started running. Nested
sessions are free: an inner one finds Ray up and leaves it to the outer one.

Token auth: Ray reads `RAY_AUTH_MODE` and the token once, when it is imported, and turns token auth on
by itself only for a local instance it starts (not when joining an explicit address). Setting the variable
"before ray is imported" in the CLI did nothing once anything had imported ray (a script, a test, another
command in the process), so it is set here, where Ray reads it, and Ray's config is reloaded.

Joining a cluster has a limit (issue 24.12): `--address 127.0.0.1:1` retried for minutes and `auto` with a
stale cluster file hung silently. A HOST:PORT that accepts no TCP connection is refused at once; any join
(`auto` included) that has not connected within `$OVIT_RAY_CONNECT_TIMEOUT_S` (default 30 s) stops with
one line naming the address. `ray.init` cannot be interrupted while Ray retries inside its C++ client, so
it runs on a daemon thread that is abandoned at the limit (a command exits right after; a long-lived
process keeps that thread until Ray gives up).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ovit_ray.orchestration.common.interrupts import STOP_SIGNALS
from ovit_ray.orchestration.common.net import unreachable
from ovit_ray.orchestration.common.ray_private import reload_ray_auth

AUTH_MODE = "RAY_AUTH_MODE"
CONNECT_TIMEOUT_ENV = "OVIT_RAY_CONNECT_TIMEOUT_S"
CONNECT_TIMEOUT_S = 30.0


@contextmanager
def ray_env(env: Mapping[str, str]) -> Iterator[None]:
    """`env` set in this process (and seen by Ray) while the block runs; the previous values after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reload_ray_auth()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reload_ray_auth()


def connect_limit() -> float:
    """Seconds a join may take: `$OVIT_RAY_CONNECT_TIMEOUT_S`, else `CONNECT_TIMEOUT_S`."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV, "")
    try:
        limit = float(text) if text else CONNECT_TIMEOUT_S
    except ValueError:
        limit = -1.0
    if not 0 < limit < float("inf"):
        raise ValueError(f"{CONNECT_TIMEOUT_ENV}: must be a number of seconds > 0, got {text!r}")
    return limit


def check_ray_address(address: str) -> None:
    """Refuse (one line naming it) a HOST:PORT (or ray://HOST:PORT) where nothing accepts TCP connections;
    `auto` and `local` are Ray's to resolve. Cheap: call it before writing anything for a join."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address in ("auto", "local"):
        return
    why = unreachable(host.strip("[]"), int(port), min(connect_limit(), 5.0))
    if why is not None:
        raise ConnectionError(
            f"Ray cluster at {address} is not reachable ({why}); start it (`ray start --head`) or fix --address"
        )


def _join_within(limit: float, **kwargs: Any) -> None:
    """`ray.init(**kwargs)` on a daemon thread, given up after `limit` seconds (see the module docstring)."""
    import ray

    failure: list[BaseException] = []
    done = threading.Event()

    def connect() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as err:  # handed to the caller's thread
            failure.append(err)
        finally:
            done.set()

    threading.Thread(target=connect, name="ray-connect", daemon=True).start()
    if not done.wait(limit):
        raise TimeoutError(
            f"no Ray cluster answered at {kwargs['address']} within {limit:g} s ({CONNECT_TIMEOUT_ENV}); "
            "check --address and that the cluster is up"
        )
    if failure:
        raise failure[0]


def _init_keeping_handlers(**kwargs: Any) -> None:
    """`ray.init`, keeping the stop handlers: it installs its own SIGTERM handler (`sys.exit`), which
    turned a SIGTERM during a sweep into an abort (exit -6) instead of a graceful stop (143)."""
    import ray

    on_main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS} if on_main else {}
    if kwargs["address"] == "local":
        ray.init(**kwargs)
    else:
        check_ray_address(kwargs["address"])
        _join_within(connect_limit(), **kwargs)
    for s, handler in saved.items():
        if handler is not None:
            signal.signal(s, handler)


@contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[bool]:
    """Ray for the block: yields True when this call initialized it (and shuts it down after),
    False when the caller had (left running). `address` None: a private local instance (127.0.0.1,
    no dashboard). Token auth unless the user chose otherwise in `RAY_AUTH_MODE`."""
    import ray

    if ray.is_initialized():
        yield False
        return
    auth = {} if os.environ.get(AUTH_MODE) else {AUTH_MODE: "token"}
    with ray_env(auth):
        _init_keeping_handlers(
            address=address or "local", include_dashboard=False, log_to_driver=True, **init_kwargs
        )
        try:
            yield True
        finally:
            ray.shutdown()
