"""MLflow tracking through ``MlflowClient`` only, with a local outbox that survives server outages.

Why no fluent API: ``mlflow.set_experiment`` sets an environment variable that Ray copies into
every worker, which then overrides the experiment those workers ask for. Every call here takes
explicit ids, so a ``Tracker`` is safe to build in any process.

Outages (``tracking.outbox``): with an ``http(s)`` URI, a write that fails because the server cannot be
reached is queued in ``<out_dir>/mlflow_outbox.jsonl`` (one warning per outage) and training goes on.
A run created during an outage gets a local id ``offline-<run key>``; ``flush_outbox()`` replays the
file later, creating or finding that run by its ``ovit.run_key`` tag (``tracking.store``). Replays are
idempotent: runs are found by key, params are re-logged with equal values, metrics keep their
original timestamps (the store drops exact duplicates) and are deduplicated by run, step and key.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID

from ovit_ray.orchestration.common.secrets import check_no_credentials, is_secret_key, redact_uri
from ovit_ray.orchestration.common.stores import default_tracking_uri
from ovit_ray.orchestration.tracking.outbox import Outbox, http_limits, is_outage
from ovit_ray.orchestration.tracking.store import (
    OFFLINE_PREFIX,
    RUN_KEY_TAG,
    RUN_STATUSES,
    Pending,
    Store,
    check_artifact_path,
    contained,
    flatten_params,
    git_commit,
)

log = logging.getLogger(__name__)
# The artifact calls this process queued (kept for its life: a replay of the same file replays them
# again): replayed as they are. Any other queued call (a folder from someone else, or from a process
# before this one) may only name files inside its folder (issue 24.1).
_queued_here: set[str] = set()


class Tracker:
    """Typed MLflow writer for one experiment; see the module docstring for the outage design."""

    def __init__(
        self,
        out_dir: str | Path,
        experiment_name: str,
        uri: str | None = None,
        *,
        offline_retry_s: float = 30.0,
    ) -> None:
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.uri = check_no_credentials(uri or default_tracking_uri(self.out_dir))
        self.experiment_name = experiment_name
        self.store = Store(
            self.uri, experiment_name, self.out_dir, remote=urlsplit(self.uri).scheme in ("http", "https")
        )
        self.client = self.store.client
        self._box = Outbox(self.out_dir)
        self.outbox = self._box.path
        self._offline_retry_s = offline_retry_s
        self._offline_until: float | None = None  # monotonic deadline while the server is down
        self._queued = False

    # ---- public API -------------------------------------------------------------------------

    def start_run(
        self,
        run_name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        run_key: str | None = None,
    ) -> str:
        """Create a run, or continue ``run_id`` / the run tagged with ``run_key`` (resume, no duplicate).

        A child run (``parent_run_id``) carries ``mlflow.parentRunId`` so the UI nests it.
        """
        user_tags = {k: str(v) for k, v in (tags or {}).items() if not is_secret_key(k)}
        if parent_run_id is not None:
            user_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        if run_id is None and run_key is not None:
            run_id = self.find_run({RUN_KEY_TAG: run_key})
        if run_id is not None:
            self._submit({"op": "resume_run", "run_id": run_id})
            self.set_tags(run_id, user_tags)
        else:
            key = run_key or uuid.uuid4().hex
            commit = git_commit()
            run_tags = {**({MLFLOW_GIT_COMMIT: commit} if commit else {}), **user_tags, RUN_KEY_TAG: key}
            record: dict[str, Any] = {
                "op": "create_run",
                "run_id": OFFLINE_PREFIX + key,
                "run_name": run_name,
                "tags": run_tags,
                "start_time": _now_ms(),
            }
            run_id = str(self._submit(record) or record["run_id"])  # the offline id while queued
        self.log_params(run_id, params or {})
        return run_id

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        """Newest active run of this experiment carrying all ``tags``; None if none (or offline)."""
        for k, v in tags.items():
            if "`" in k or "'" in str(v):
                raise ValueError(f"tag filters cannot contain quotes, got {k!r}={v!r}")
        if self._offline_now():
            return None
        try:
            with http_limits(self.store.remote):
                return self.store.find_run(tags)
        except Exception as exc:
            if not self._outage(exc):
                raise
            return None

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        ts = _now_ms()
        rows = [[k, float(v), ts, step] for k, v in metrics.items()]
        if rows:
            self._submit({"op": "log_batch", "run_id": run_id, "metrics": rows})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Stringified (see ``flatten_params``); re-logging an equal value is a no-op, a different one raises."""
        flat = flatten_params(params)
        if flat:
            self._submit({"op": "log_batch", "run_id": run_id, "params": flat})

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        if tags:
            self._submit({"op": "log_batch", "run_id": run_id, "tags": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """`path` is recorded relative to the output folder when inside it (a moved or copied folder
        still finds it); `artifact_path` must stay below the run's artifacts (no `..`, not absolute)."""
        check_artifact_path(artifact_path)
        local = Path(path).resolve()
        if not local.exists():
            raise FileNotFoundError(f"artifact not found: {local}")
        where = (
            local.relative_to(self.out_dir).as_posix() if local.is_relative_to(self.out_dir) else str(local)
        )
        self._submit({"op": "log_artifact", "run_id": run_id, "path": where, "artifact_path": artifact_path})

    def describe_experiment(self, text: str) -> None:
        """The experiment's description (MLflow shows the `mlflow.note.content` tag above its runs)."""
        if text:
            self._submit({"op": "experiment_tags", "tags": {"mlflow.note.content": text}})

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        self._submit({"op": "end_run", "run_id": run_id, "status": status, "end_time": _now_ms()})

    def real_run_id(self, run_id: str) -> str | None:
        """The store's id for ``run_id`` (which may be an offline id); None while not yet replayed."""
        try:
            return self.store.real_id(run_id)
        except Pending:
            return None

    def flush_outbox(self, *, only_own_files: bool = False) -> int:
        """Replay queued calls in order; returns how many were sent. Stops (keeping the rest) if
        the server is still down; calls the store rejects go to ``<outbox>.rejected`` with a warning,
        and so do artifact calls that name a file outside this folder, or a directory with a symlink
        leading out of it, unless this process queued them (the outbox may come from someone else).
        ``only_own_files`` (``sync-mlflow``): no exception for calls this process queued."""
        with self._box.lock:
            if not self.outbox.exists():
                return 0
            records = self._box.records()
            sent = 0
            for i, record in enumerate(records):
                try:
                    if record["op"] == "log_artifact":
                        check_artifact_path(record["artifact_path"])
                        if only_own_files or _key(record) not in _queued_here:
                            contained(self.out_dir / record["path"], self.out_dir)
                    with http_limits(self.store.remote):
                        self.store.execute(record)
                except Exception as exc:
                    if self._outage(exc):
                        self._box.keep(records[i:])
                        return sent
                    log.warning(
                        "MLflow rejected a queued %s call (%.200s); kept in %s.rejected",
                        record["op"],
                        exc,
                        self.outbox,
                    )
                    self._box.reject(record)
                else:
                    sent += 1
            self._box.clear()
            self._queued = False
            self._offline_until = None
            return sent

    # ---- internals --------------------------------------------------------------------------

    def _offline_now(self) -> bool:
        return self._offline_until is not None and time.monotonic() < self._offline_until

    def _outage(self, exc: BaseException) -> bool:
        """Whether `exc` means the server cannot be reached; if so, calls are queued for a while."""
        if not (self.store.remote and is_outage(exc)):
            return False
        if self._offline_until is None and self._box.first_warning():
            log.warning(
                "MLflow tracking server %s unreachable (%s: %s); training goes on, calls are queued in %s "
                "and replayed when the server answers again, or now with `ovit-ray sync-mlflow %s --mlflow-uri URI`",
                redact_uri(self.uri),
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
                self.outbox,
                self.out_dir,
            )
        self._offline_until = time.monotonic() + self._offline_retry_s
        return True

    def _submit(self, record: dict[str, Any]) -> Any:
        """Send now, or queue when the server is down (or when earlier calls are still queued)."""
        if self._queued and not self._offline_now():
            self.flush_outbox()
        if self._queued or self._offline_now():
            return self._enqueue(record)
        try:
            with http_limits(self.store.remote):
                result = self.store.execute(record)
        except Pending:
            return self._enqueue(record)
        except Exception as exc:
            if not self._outage(exc):
                raise
            return self._enqueue(record)
        self._offline_until = None
        return result

    def _enqueue(self, record: dict[str, Any]) -> None:
        self._box.append(record, {"uri": redact_uri(self.uri), "experiment": self.experiment_name})
        if record["op"] == "log_artifact":
            _queued_here.add(_key(record))
        self._queued = True


def _now_ms() -> int:
    return int(time.time() * 1000)


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)
