"""Stop signals (SIGINT, SIGTERM) for long commands: first one stops gracefully, a second one at once.

Why our own handler: Ray Tune swallows the first SIGINT and returns from `fit()` normally, so an
interrupted sweep looked finished. Here every command runs under `StopSignals`: a signal raises
`Interrupted` (a `KeyboardInterrupt`, so no `except Exception` on the way swallows it and every
`finally` runs: the MLflow server and the local Ray instance a command started are stopped). It must be
a `KeyboardInterrupt`: Ray checks signals inside `ray.wait`/`ray.get` and turns any other exception a
handler raises there into a `SystemError` (a second Ctrl-C during Tune's clean-up exited 70), while a
`KeyboardInterrupt` comes out as a plain one; callers map that back with `StopSignals.received`. While
a graceful stop is registered (`Tuner.fit`), the first signal asks Tune to stop instead (it saves its
state and returns) and is remembered in `received`; the caller then marks the work interrupted.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):  # noqa: N818 (a stop request, not an error)
    """A stop signal arrived; `exit_code` is the shell's 128 + signal number (130 Ctrl-C, 143 SIGTERM)."""

    def __init__(self, signum: int, hint: str = "") -> None:
        self.signum, self.hint = signum, hint
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        name = "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name
        return f"interrupted ({name}); finished results are kept" + (f"; {self.hint}" if self.hint else "")


class StopSignals:
    """Handlers for SIGINT and SIGTERM while the block runs (main thread only; elsewhere a no-op)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._graceful: Callable[[int, FrameType | None], None] | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._saved.items():
            signal.signal(s, handler)
        self._saved = {}

    @contextmanager
    def graceful(self, stop: Callable[[int, FrameType | None], None]) -> Iterator[None]:
        """While the block runs, the first signal calls `stop` instead of raising."""
        self._graceful = stop
        try:
            yield
        finally:
            self._graceful = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None and self._graceful is not None:
            self.received = signum
            log.warning(
                "stop requested (%s): finishing gracefully, saving state; send it again to stop at once",
                signal.Signals(signum).name,
            )
            self._graceful(signum, frame)
            return
        self.received = self.received or signum
        raise Interrupted(signum)


@contextmanager
def tune_stop_on_signal(signals: StopSignals) -> Iterator[None]:
    """A graceful stop of `Tuner.fit`: Tune's own stop handler (SIGUSR1, installed when `fit` starts).

    SIGINT is kept away from Tune (`TUNE_DISABLE_SIGINT_HANDLER`, set by the caller) so our handler sees
    it; SIGUSR1 is reset first so a handler left by an earlier `fit` in this process is never called.
    """
    if threading.current_thread() is not threading.main_thread():  # no handlers there; Tune skips them too
        yield
        return
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def stop(signum: int, frame: FrameType | None) -> None:
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_handler):  # Tune has not started its loop yet: nothing to save
            raise Interrupted(signum)
        tune_handler(signum, frame)

    try:
        with signals.graceful(stop):
            yield
    finally:
        signal.signal(signal.SIGUSR1, previous)
