"""A server we start (MLflow, optuna-dashboard) as its own process group led by a watchdog: stopping it stops
every child (gunicorn and uvicorn workers included), and so does the death of the command that started it,
even by SIGKILL, so no server is left listening without an owner."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["GroupProcess"]

# Leads the server's process group: runs the command given after the expected parent's pid and, once
# that parent is gone (polled: portable, even after SIGKILL), stops the whole group. A stop signal
# from the parent reaches the whole group anyway; then it only waits for the server.
WATCHDOG = """
import os, signal, subprocess, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
child = subprocess.Popen(sys.argv[2:])
while child.poll() is None and not stop:
    if os.getppid() != int(sys.argv[1]):
        os.killpg(0, signal.SIGTERM)
    time.sleep(0.5)
try:
    child.wait(10)
except subprocess.TimeoutExpired:
    os.killpg(0, signal.SIGKILL)
os.killpg(0, signal.SIGTERM)
sys.exit(child.returncode if child.returncode >= 0 else 128 - child.returncode)
"""


class GroupProcess:
    """One server command in its own process group, its output appended to `log`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(
        self,
        command: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG, str(os.getpid()), *command],
                env=None if env is None else dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> int:
        """Block until the server exits (foreground use); its exit code."""
        assert self.proc is not None, "start() first"
        return self.proc.wait()

    def stop_group(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after `grace_s`; idempotent."""
        if self.proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
                break
        self.proc = None
