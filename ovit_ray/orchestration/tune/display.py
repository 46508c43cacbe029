"""The one terminal display of every sweep (and `train`, `transfer`, `compare-strategies`, `prune`).

On a terminal: a live view, 80 columns wide, of trials done / running / stopped / failed of the total, the
elapsed time and an ETA, the best objective so far with its knobs, and each running trial's target and
epoch. Elsewhere (CI, pipes, `--verbose`): one plain line per event (a target reached, a trial ended).
Ray's, Tune's and Train's own output goes to a log file in the output folder (`capture_logs`), whose path
the display shows; `--verbose` leaves it on the terminal. Numbers print in a form that keeps their meaning
(λ 4.8e-7, never `0.`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from ovit_ray.knobs import short_value

__all__ = ["Display", "capture_logs"]

LOG_FILE = "sweep.log"
WIDTH = 80
STATUS_WORDS = {
    "finished": "done",
    "stopped_early": "stopped",
    "failed": "failed",
    "interrupted": "interrupted",
}


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _target(value: float | None, name: str) -> str:
    if value is None:
        return "result"
    return f"{name} {100 * value:g}%" if name in ("sparsity", "macs") else f"{name} {short_value(value)}"


@dataclass
class _Running:
    label: str
    target: int = 0  # targets reached
    epoch: str = ""
    note: str = ""


@dataclass
class Display:
    """What a sweep shows while it runs; `console` is the terminal (not the log file)."""

    title: str
    total: int
    objective: tuple[str, str]  # (metric, mode)
    targets: int  # targets per trial (0: one result each)
    target_name: str
    log: Path | None
    console: Console
    concurrency: int = 1
    live: bool = False
    started: float = field(default_factory=time.monotonic)
    running: dict[str, _Running] = field(default_factory=dict)
    ended: dict[str, str] = field(default_factory=dict)  # trial -> status
    durations: list[float] = field(default_factory=list)
    best: tuple[float, str] | None = None  # (objective, trial label)
    _live: Live | None = None

    # -- life -----------------------------------------------------------------------------------
    def __enter__(self) -> Display:
        self._line(f"{self.title}: {self.total} trial(s)")
        if self.ended:  # a resume: the trials that ended before count toward the total
            self._line(f"{len(self.ended)} of them ended before this run (kept, not run again)")
        if self.log is not None:
            self._line(f"Ray, Tune and Train output: {self.log}")
        if self.live:
            # no redirection: whatever else writes to stdout belongs in the log file (`capture_logs`)
            self._live = Live(
                self._view(),
                console=self.console,
                refresh_per_second=2,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None
        self._line(self.counts())

    def _line(self, text: str) -> None:
        """A line that stays (above the live view on a terminal)."""
        stamp = _clock(time.monotonic() - self.started)
        self.console.print(
            Text(f"[{stamp}] {text}"), overflow="ellipsis", no_wrap=True, crop=True, width=WIDTH
        )
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._view())

    # -- events ---------------------------------------------------------------------------------
    def trial_started(self, trial_id: str, label: str) -> None:
        self.running[trial_id] = _Running(label or trial_id)
        self._refresh()

    def epoch(self, trial_id: str, epoch: int) -> None:
        self.running.setdefault(trial_id, _Running(trial_id)).epoch = f"epoch {epoch + 1}"
        self._refresh()

    def progress(self, trial_id: str, text: str) -> None:
        self.running.setdefault(trial_id, _Running(trial_id)).note = text
        self._refresh()

    def target(self, trial_id: str, target: float | None, top1: float, val_top1: float | None) -> None:
        run = self.running.setdefault(trial_id, _Running(trial_id))
        run.target += 1
        val = "" if val_top1 is None else f" (val {_percent(val_top1)})"
        self._line(f"{trial_id} {_target(target, self.target_name)}: test top-1 {_percent(top1)}{val}")

    def trial_ended(
        self, trial_id: str, status: str, objective: float | None, seconds: float, error: str = ""
    ) -> None:
        run = self.running.pop(trial_id, _Running(trial_id))
        self.ended[trial_id] = status
        self.durations.append(seconds)
        metric, mode = self.objective
        if status == "finished" and objective is not None:
            best = self.best
            if best is None or (objective > best[0] if mode == "max" else objective < best[0]):
                self.best = (objective, f"{trial_id} {run.label}")
        value = "" if objective is None else f" {metric} {self._objective_text(objective)}"
        why = f": {error}" if error else ""
        self._line(f"{trial_id} {STATUS_WORDS.get(status, status)}{value} {run.label}{why}")

    def note(self, text: str) -> None:
        self._line(text)

    # -- text -----------------------------------------------------------------------------------
    def _objective_text(self, value: float) -> str:
        return _percent(value) if "top1" in self.objective[0] else short_value(value)

    def counts(self) -> str:
        states = list(self.ended.values())
        parts = [
            f"{states.count(s)} {w}" for s, w in STATUS_WORDS.items() if s != "interrupted" or s in states
        ]
        return f"{', '.join(parts)}, {len(self.running)} running of {self.total}; elapsed {_clock(time.monotonic() - self.started)}"

    def eta(self) -> str:
        if not self.durations:
            return "?"
        left = max(0, self.total - len(self.ended) - len(self.running)) + len(self.running) / 2
        return _clock(sum(self.durations) / len(self.durations) * left / max(1, self.concurrency))

    def _view(self) -> Group:
        lines = [Text(f"{self.counts()}; ETA {self.eta()}")]
        if self.best is not None:
            lines.append(
                Text(f"best {self.objective[0]} {self._objective_text(self.best[0])}: {self.best[1]}")
            )
        for trial_id, run in list(self.running.items())[:8]:
            where = f"target {min(run.target + 1, self.targets)}/{self.targets}" if self.targets else ""
            lines.append(Text(f"  {trial_id} {run.label} {where} {run.epoch} {run.note}".rstrip()))
        for line in lines:
            line.truncate(WIDTH, overflow="ellipsis")
        return Group(*lines)


class _DisplayLog(logging.Handler):
    """ovit_ray's own warnings reach the user through the display, not the log file."""

    def __init__(self, display: Display) -> None:
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        self.display.note(f"warning: {record.getMessage()}"[:300])


@contextlib.contextmanager
def show_warnings(display: Display) -> Iterator[None]:
    logger = logging.getLogger("ovit_ray")
    handler = _DisplayLog(display)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def capture_logs(folder: Path | None, verbose: bool) -> Iterator[tuple[Console, Path | None]]:
    """(the terminal's console, the log file): while the block runs, everything else written to stdout and
    stderr (Ray's workers and services, Tune, Train, warnings) goes to `<folder>/sweep.log` instead, at the
    file-descriptor level when stdout is the process's own. `verbose` or no folder: nothing is redirected."""
    terminal: TextIO = sys.stdout
    if verbose or folder is None:
        yield Console(file=terminal, width=WIDTH), None
        return
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG_FILE
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 (closed below, after the descriptors are restored)
    saved: dict[int, int] = {}
    try:
        own = terminal.fileno() == 1
    except (AttributeError, io.UnsupportedOperation, ValueError):
        own = False
    old = sys.stdout, sys.stderr
    try:
        if own:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd in (1, 2):
                saved[fd] = os.dup(fd)
                os.dup2(log.fileno(), fd)
            terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
        sys.stdout = sys.stderr = log
        yield Console(file=terminal, width=WIDTH, force_terminal=_is_tty(terminal) or None), log_path
    finally:
        sys.stdout, sys.stderr = old
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        if own:
            terminal.close()
        log.close()


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
