"""The outbox: MLflow calls kept on disk while the tracking server cannot be reached (`tracking.client`).

Several processes and several Trackers may share one outbox (the sweep driver holds one for the parent
run and one in the trial callback): every change happens under a file lock.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from filelock import FileLock

from ovit_ray.orchestration.common.atomic import write_text_atomic

OUTBOX_NAME = "mlflow_outbox.jsonl"
# where the outbox belongs: URI (credentials redacted), experiment
OUTBOX_TARGET = "mlflow_outbox.target.json"
# MLflow's defaults (7 retries, backoff 2, 120 s timeout) can block a call for minutes when the
# server is down. Applied only around the tracker's HTTP calls, and only where the user has not set them.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_env_lock = threading.RLock()
# Outboxes this process has warned about in the current outage: an outage deserves one warning, not
# one per Tracker on the same outbox.
_warned: set[Path] = set()


def outbox_target(out_dir: str | Path) -> dict[str, str] | None:
    """URI and experiment of the queued calls in ``out_dir`` (None when nothing is queued)."""
    path = Path(out_dir) / OUTBOX_TARGET
    return json.loads(path.read_text()) if (Path(out_dir) / OUTBOX_NAME).exists() and path.exists() else None


def is_outage(exc: BaseException) -> bool:
    """The server could not be reached or is temporarily failing (not a rejected request)."""
    from mlflow.exceptions import RestException  # here: `sweep --dry-run` imports this package, not MLflow

    if isinstance(exc, RestException):
        return exc.get_http_status_code() >= 500 or exc.get_http_status_code() == 429
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def http_limits(remote: bool) -> Iterator[None]:
    """Apply ``HTTP_LIMITS`` for the duration of one call (not exported to Ray workers)."""
    if not remote:
        yield
        return
    with _env_lock:
        added = [k for k in HTTP_LIMITS if k not in os.environ]
        os.environ.update({k: HTTP_LIMITS[k] for k in added})
        try:
            yield
        finally:
            for k in added:
                os.environ.pop(k, None)


class Outbox:
    """``<out_dir>/mlflow_outbox.jsonl``, its target file and its ``.rejected`` file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / OUTBOX_NAME
        self.lock = FileLock(f"{self.path}.lock")

    def append(self, record: dict[str, Any], target: dict[str, str]) -> None:
        """Queue one call; `target` (redacted URI, experiment) is what `ovit-ray sync-mlflow` shows."""
        with self.lock:
            target_file = self.out_dir / OUTBOX_TARGET
            if not target_file.exists():
                target_file.write_text(json.dumps(target))
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        """The queued calls in order, each metric point once (call under `lock`)."""
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return _dedupe([json.loads(line) for line in lines if line.strip()])

    def keep(self, records: list[dict[str, Any]]) -> None:
        """Replace the queue with the calls still to send (call under `lock`)."""
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def reject(self, record: dict[str, Any]) -> None:
        with open(f"{self.path}.rejected", "a") as f:
            f.write(json.dumps(record) + "\n")

    def clear(self) -> None:
        """Everything was sent: the outage is over (call under `lock`)."""
        self.path.unlink(missing_ok=True)
        (self.out_dir / OUTBOX_TARGET).unlink(missing_ok=True)
        _warned.discard(self.path)

    def first_warning(self) -> bool:
        """True once per outage and process: whether this caller should warn."""
        if self.path in _warned:
            return False
        _warned.add(self.path)
        return True


def _dedupe(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last value of each (run, step, metric) so a replay logs every point once."""
    seen: set[tuple[str, int, str]] = set()
    out: list[dict[str, Any]] = []
    for record in reversed(records):
        if record["op"] == "log_batch" and record.get("metrics"):
            fresh = []
            for row in reversed(record["metrics"]):
                ident = (record["run_id"], row[3], row[0])
                if ident not in seen:
                    seen.add(ident)
                    fresh.append(row)
            record = {**record, "metrics": fresh[::-1]}
            if not (fresh or record.get("params") or record.get("tags")):
                continue
        out.append(record)
    return out[::-1]
