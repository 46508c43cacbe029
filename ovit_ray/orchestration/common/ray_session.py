"""The one way our commands get a Ray instance: join `address` or start a private local one, keep our
stop-signal handlers, ask for token authentication, and on the way out shut down only what we started.

Why: the sweep called `ray.shutdown()` even when its caller (a notebook, a test, `compare-strategies`
around several runs) had started Ray, and `ovit-ray train` left the instance it started running. Nested
sessions are free: an inner one finds Ray up and leaves it to the outer one.

Token auth: Ray reads `RAY_AUTH_MODE` and the token once, when it is imported, and turns token auth on
by itself only for a local instance it starts (not when joining an explicit address). Setting the variable
"before ray is imported" in the CLI did nothing once anything had imported ray (a script, a test, another
command in the process), so it is set here, where Ray reads it, and Ray's config is reloaded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ovit_ray.orchestration.common.interrupts import STOP_SIGNALS

AUTH_MODE = "RAY_AUTH_MODE"


def reload_ray_auth() -> None:
    """Make an imported Ray re-read `RAY_AUTH_MODE` and its token (private hooks, the same ones
    `ray.init` uses when it turns token auth on); before Ray is imported there is nothing to reload."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import (  # type: ignore[attr-defined]  # Cython module; its .pyi omits these two
        AuthenticationTokenLoader,
        Config,
    )

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


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


def _init_keeping_handlers(**kwargs: Any) -> None:
    """`ray.init`, keeping the stop handlers: it installs its own SIGTERM handler (`sys.exit`), which
    turned a SIGTERM during a sweep into an abort (exit -6) instead of a graceful stop (143)."""
    import ray

    on_main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS} if on_main else {}
    ray.init(**kwargs)
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
