"""MLflow tracking through ``MlflowClient`` only, with a local outbox that survives server outages.

Why no fluent API: ``mlflow.set_experiment`` sets an environment variable that Ray copies into
every worker, which then overrides the experiment those workers ask for. Every call here takes
explicit ids, so a ``Tracker`` is safe to build in any process.

Outages: with an ``http(s)`` URI, a write that fails because the server cannot be reached is
appended to ``<out_dir>/mlflow_outbox.jsonl`` (one warning per outage) and training goes on.
A run created during an outage gets a local id ``offline-<run key>``; ``flush_outbox()``
replays the file later, creating or finding that run by its ``ovit.run_key`` tag. Replays are
idempotent: runs are found by key, params are re-logged with equal values, metrics keep their
original timestamps (the store drops exact duplicates) and are deduplicated by run, step and key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import quote, unquote, urlsplit

import requests
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from ovit_ray.orchestration.common.atomic import write_text_atomic
from ovit_ray.orchestration.common.secrets import check_no_credentials, is_secret_key, redact_uri

log = logging.getLogger(__name__)

RUN_KEY_TAG = "ovit.run_key"
OFFLINE_PREFIX = "offline-"
OUTBOX_NAME = "mlflow_outbox.jsonl"
OUTBOX_TARGET = (
    "mlflow_outbox.target.json"  # where the outbox belongs: URI (credentials redacted), experiment
)
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow 3 opens an experiment without this tag in its GenAI layout (traces, judges, prompts); these are
# training runs, compared in the runs table and the chart view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Local stores keep artifacts in `artifacts/` next to the database and record `mlflow-artifacts:` URIs,
# which `mlflow server`/`ovit-ray mlflow-server --dir` resolve against `--artifacts-destination`:
# the folder can move or be copied to another machine and its artifacts still open.
ARTIFACTS_DIR = "artifacts"
PROXIED = "mlflow-artifacts:"
# MLflow's defaults (7 retries, backoff 2, 120 s timeout) can block a call for minutes when the
# server is down. Applied only around this module's HTTP calls, and only where the user has not
# set them.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_env_lock = threading.RLock()
# Outboxes this process has warned about in the current outage: the sweep driver holds several
# Trackers on one outbox (parent run, trial callback), and an outage deserves one warning, not one each.
_warned_outboxes: set[Path] = set()


class _Pending(Exception):
    """A run id is still offline-only: the call must wait in the outbox."""


def default_tracking_uri(out_dir: str | Path) -> str:
    """Embedded SQLite store inside the output dir (MLflow 3 rejects the old ./mlruns store).

    SQLAlchemy reads `%XX` and `?` in a plain `sqlite:///PATH` URL (a folder named `a%20b` or `q?x`
    opened another file, or none), so such paths go as an SQLite URI filename (`file:`, percent-encoded
    for SQLite, then again for SQLAlchemy): it also has no `/` left for MLflow, which would otherwise
    create the encoded parent folder next to the real one.
    """
    path = str(Path(out_dir).resolve() / "mlflow.db")
    if not set(path) & set("%?#"):
        return f"sqlite:///{path}"
    return f"sqlite:///{quote('file:' + quote(path, safe='/'), safe='')}?uri=true"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (either form `default_tracking_uri` writes), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri.removeprefix("sqlite:///")
    if rest.endswith("?uri=true"):
        return Path(unquote(unquote(rest.removesuffix("?uri=true")).removeprefix("file:")))
    return Path(rest)


def git_commit(path: str | Path | None = None) -> str | None:
    """HEAD commit of the checkout holding ``path`` (default: this package's code), else None."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() if out.returncode == 0 else ""
    return commit or None


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """MLflow param strings: nested dicts become dotted keys, lists JSON; credentials dropped."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if is_secret_key(str(key)):
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
            flat[name] = text[:MAX_PARAM_VAL_LENGTH]
    return flat


def outbox_target(out_dir: str | Path) -> dict[str, str] | None:
    """URI and experiment of the queued calls in ``out_dir`` (None when nothing is queued)."""
    path = Path(out_dir) / OUTBOX_TARGET
    return json.loads(path.read_text()) if (Path(out_dir) / OUTBOX_NAME).exists() and path.exists() else None


def _is_outage(exc: BaseException) -> bool:
    """The server could not be reached or is temporarily failing (not a rejected request)."""
    if isinstance(exc, RestException):
        return exc.get_http_status_code() >= 500 or exc.get_http_status_code() == 429
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.exceptions.RequestException | ConnectionError | TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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
        self.client = MlflowClient(self.uri)
        self.outbox = self.out_dir / OUTBOX_NAME
        self._outbox_lock = FileLock(f"{self.outbox}.lock")
        self._remote = urlsplit(self.uri).scheme in ("http", "https")
        self._offline_retry_s = offline_retry_s
        self._offline_until: float | None = None  # monotonic deadline while the server is down
        self._queued = False
        self._experiment_id: str | None = None
        self._ids: dict[str, str] = {}  # offline id -> real run id

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
            with _http_limits(self._remote):
                return self._find_run(tags)
        except Exception as exc:
            if not (self._remote and _is_outage(exc)):
                raise
            self._go_offline(exc)
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
        local = Path(path).resolve()
        if not local.exists():
            raise FileNotFoundError(f"artifact not found: {local}")
        self._submit(
            {"op": "log_artifact", "run_id": run_id, "path": str(local), "artifact_path": artifact_path}
        )

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
            return self._real_id(run_id)
        except _Pending:
            return None

    def flush_outbox(self, *, only_own_files: bool = False) -> int:
        """Replay queued calls in order; returns how many were sent. Stops (keeping the rest) if
        the server is still down; calls the store rejects go to ``<outbox>.rejected`` with a warning.
        ``only_own_files``: an outbox that may come from someone else (``sync-mlflow``) uploads only
        files inside this folder."""
        with self._outbox_lock:
            if not self.outbox.exists():
                return 0
            lines = self.outbox.read_text().splitlines()
            records = _dedupe([json.loads(line) for line in lines if line.strip()])
            sent = 0
            for i, record in enumerate(records):
                try:
                    if (
                        only_own_files
                        and record["op"] == "log_artifact"
                        and not Path(record["path"]).resolve().is_relative_to(self.out_dir)
                    ):
                        raise ValueError(f"artifact {record['path']} is outside {self.out_dir}")
                    with _http_limits(self._remote):
                        self._execute(record)
                except Exception as exc:
                    if self._remote and _is_outage(exc):
                        self._go_offline(exc)
                        write_text_atomic(self.outbox, "".join(json.dumps(r) + "\n" for r in records[i:]))
                        return sent
                    log.warning(
                        "MLflow rejected a queued %s call (%.200s); kept in %s.rejected",
                        record["op"],
                        exc,
                        self.outbox,
                    )
                    with open(f"{self.outbox}.rejected", "a") as f:
                        f.write(json.dumps(record) + "\n")
                else:
                    sent += 1
            self.outbox.unlink()
            (self.out_dir / OUTBOX_TARGET).unlink(missing_ok=True)
            _warned_outboxes.discard(self.outbox)
            self._queued = False
            self._offline_until = None
            return sent

    # ---- internals --------------------------------------------------------------------------

    def _offline_now(self) -> bool:
        return self._offline_until is not None and time.monotonic() < self._offline_until

    def _go_offline(self, exc: BaseException) -> None:
        if self._offline_until is None and self.outbox not in _warned_outboxes:
            _warned_outboxes.add(self.outbox)
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

    def _submit(self, record: dict[str, Any]) -> Any:
        """Send now, or queue when the server is down (or when earlier calls are still queued)."""
        if self._queued and not self._offline_now():
            self.flush_outbox()
        if self._queued or self._offline_now():
            return self._enqueue(record)
        try:
            with _http_limits(self._remote):
                result = self._execute(record)
        except _Pending:
            return self._enqueue(record)
        except Exception as exc:
            if not (self._remote and _is_outage(exc)):
                raise
            self._go_offline(exc)
            return self._enqueue(record)
        self._offline_until = None
        return result

    def _enqueue(self, record: dict[str, Any]) -> None:
        with self._outbox_lock:
            target = self.out_dir / OUTBOX_TARGET
            if not target.exists():  # where the calls were meant to go, shown by `ovit-ray sync-mlflow`
                target.write_text(
                    json.dumps({"uri": redact_uri(self.uri), "experiment": self.experiment_name})
                )
            with open(self.outbox, "a") as f:
                f.write(json.dumps(record) + "\n")
        self._queued = True

    def _execute(self, record: dict[str, Any]) -> Any:
        op = record["op"]
        if op == "create_run":
            return self._create_run(record)
        if op == "experiment_tags":
            for key, value in record["tags"].items():
                self.client.set_experiment_tag(self._experiment(create=True), key, value)
            return None
        run_id = self._real_id(record["run_id"])
        if op == "resume_run":
            self.client.update_run(run_id, status="RUNNING")
        elif op == "log_batch":
            tags = dict(record.get("tags", {}))
            if MLFLOW_PARENT_RUN_ID in tags:
                tags[MLFLOW_PARENT_RUN_ID] = self._real_id(tags[MLFLOW_PARENT_RUN_ID])
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])],
                params=[Param(k, v) for k, v in record.get("params", {}).items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
        elif op == "log_artifact":
            self._log_artifact(run_id, Path(record["path"]), record["artifact_path"])
        elif op == "end_run":
            self.client.set_terminated(run_id, record["status"], record["end_time"])
        else:
            raise ValueError(f"unknown outbox op {op!r}")
        return None

    def _create_run(self, record: dict[str, Any]) -> str:
        tags = dict(record["tags"])
        existing = self._find_run({RUN_KEY_TAG: tags[RUN_KEY_TAG]})
        if existing is not None:
            run_id = existing
        else:
            if MLFLOW_PARENT_RUN_ID in tags:
                tags[MLFLOW_PARENT_RUN_ID] = self._real_id(tags[MLFLOW_PARENT_RUN_ID])
            run = self.client.create_run(
                self._experiment(create=True), record["start_time"], tags, record["run_name"]
            )
            run_id = run.info.run_id
        self._ids[record["run_id"]] = run_id
        return run_id

    def _log_artifact(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        """A proxied URI in a local store: copy into `artifacts/`, where a server started on the store serves it."""
        uri = self.client.get_run(run_id).info.artifact_uri
        if self._remote or not uri.startswith(PROXIED):
            self.client.log_artifact(run_id, str(path), artifact_path)
            return
        dest = self.artifacts_root / uri.removeprefix(PROXIED).lstrip("/") / (artifact_path or "")
        dest.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, dest / path.name, dirs_exist_ok=True)
        else:
            shutil.copy2(path, dest / path.name)

    @property
    def artifacts_root(self) -> Path:
        """`artifacts/` next to a SQLite store (else in the output folder): serve it with
        `mlflow server --backend-store-uri URI --artifacts-destination ROOT`."""
        db = sqlite_path(self.uri)
        base = db.resolve().parent if db is not None else self.out_dir
        return base / ARTIFACTS_DIR

    def _real_id(self, run_id: str) -> str:
        if not run_id.startswith(OFFLINE_PREFIX):
            return run_id
        if run_id not in self._ids:
            with _http_limits(self._remote):
                found = self._find_run({RUN_KEY_TAG: run_id[len(OFFLINE_PREFIX) :]})
            if found is None:
                raise _Pending(run_id)
            self._ids[run_id] = found
        return self._ids[run_id]

    def _find_run(self, tags: Mapping[str, str]) -> str | None:
        experiment_id = self._experiment(create=False)
        if experiment_id is None:
            return None
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [experiment_id], where, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0].info.run_id if runs else None

    @overload
    def _experiment(self, *, create: Literal[True]) -> str: ...

    @overload
    def _experiment(self, *, create: Literal[False]) -> str | None: ...

    def _experiment(self, *, create: bool) -> str | None:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
            elif create:
                # Named after the experiment (ids are not known before it exists); runs get their own subfolders.
                location = (
                    None
                    if self._remote
                    else f"{PROXIED}/{re.sub(r'[^A-Za-z0-9_.-]', '_', self.experiment_name)}"
                )
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, location, EXPERIMENT_KIND
                    )
                except MlflowException as exc:  # another worker created it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    theirs = self.client.get_experiment_by_name(self.experiment_name)
                    if theirs is None:  # created and deleted again meanwhile: nothing to join
                        raise
                    self._experiment_id = theirs.experiment_id
        return self._experiment_id


@contextmanager
def _http_limits(remote: bool) -> Iterator[None]:
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


def _now_ms() -> int:
    return int(time.time() * 1000)
