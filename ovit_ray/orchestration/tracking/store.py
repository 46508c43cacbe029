"""The MLflow store side of tracking: where a store lives, what a run carries, and one call applied to it.

`Store.execute` applies one call record (the same records the outbox keeps), so a call sent at once and
a call replayed after an outage take one path. A run created during an outage has a local id
``offline-<run key>``; the store finds the real run by its ``ovit.run_key`` tag.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload
from urllib.parse import quote, unquote

from ovit_ray.orchestration.common.secrets import is_secret_key
from ovit_ray.orchestration.tracking.outbox import http_limits

# mlflow is imported where it is used: `sweep --dry-run` shows `default_tracking_uri` and must not
# pay MLflow's import (~170 MB, seconds).

RUN_KEY_TAG = "ovit.run_key"
OFFLINE_PREFIX = "offline-"
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
# MLflow 3 opens an experiment without this tag in its GenAI layout (traces, judges, prompts); these are
# training runs, compared in the runs table and the chart view.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Local stores keep artifacts in `artifacts/` next to the database and record `mlflow-artifacts:` URIs,
# which `mlflow server`/`ovit-ray mlflow-server --dir` resolve against `--artifacts-destination`:
# the folder can move or be copied to another machine and its artifacts still open.
ARTIFACTS_DIR = "artifacts"
PROXIED = "mlflow-artifacts:"


class Pending(Exception):  # noqa: N818 (a state, not an error)
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
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

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


class Store:
    """One experiment of one MLflow store, through ``MlflowClient`` with explicit ids only."""

    def __init__(self, uri: str, experiment_name: str, out_dir: Path, *, remote: bool) -> None:
        from mlflow import MlflowClient

        self.uri, self.experiment_name, self.out_dir, self.remote = uri, experiment_name, out_dir, remote
        self.client = MlflowClient(uri)
        self._experiment_id: str | None = None
        self._ids: dict[str, str] = {}  # offline id -> real run id

    def execute(self, record: dict[str, Any]) -> Any:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        op = record["op"]
        if op == "create_run":
            return self.create_run(record)
        if op == "experiment_tags":
            for key, value in record["tags"].items():
                self.client.set_experiment_tag(self.experiment(create=True), key, value)
            return None
        run_id = self.real_id(record["run_id"])
        if op == "resume_run":
            self.client.update_run(run_id, status="RUNNING")
        elif op == "log_batch":
            tags = dict(record.get("tags", {}))
            if MLFLOW_PARENT_RUN_ID in tags:
                tags[MLFLOW_PARENT_RUN_ID] = self.real_id(tags[MLFLOW_PARENT_RUN_ID])
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, ts, step) for k, v, ts, step in record.get("metrics", [])],
                params=[Param(k, v) for k, v in record.get("params", {}).items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
        elif op == "log_artifact":
            self.log_artifact(run_id, Path(record["path"]), record["artifact_path"])
        elif op == "end_run":
            self.client.set_terminated(run_id, record["status"], record["end_time"])
        else:
            raise ValueError(f"unknown outbox op {op!r}")
        return None

    def create_run(self, record: dict[str, Any]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = dict(record["tags"])
        existing = self.find_run({RUN_KEY_TAG: tags[RUN_KEY_TAG]})
        if existing is not None:
            run_id = existing
        else:
            if MLFLOW_PARENT_RUN_ID in tags:
                tags[MLFLOW_PARENT_RUN_ID] = self.real_id(tags[MLFLOW_PARENT_RUN_ID])
            run = self.client.create_run(
                self.experiment(create=True), record["start_time"], tags, record["run_name"]
            )
            run_id = run.info.run_id
        self._ids[record["run_id"]] = run_id
        return run_id

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        """A proxied URI in a local store: copy into `artifacts/`, where a server started on the store serves it."""
        uri = self.client.get_run(run_id).info.artifact_uri
        if self.remote or not uri.startswith(PROXIED):
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

    def real_id(self, run_id: str) -> str:
        if not run_id.startswith(OFFLINE_PREFIX):
            return run_id
        if run_id not in self._ids:
            with http_limits(self.remote):
                found = self.find_run({RUN_KEY_TAG: run_id[len(OFFLINE_PREFIX) :]})
            if found is None:
                raise Pending(run_id)
            self._ids[run_id] = found
        return self._ids[run_id]

    def find_run(self, tags: Mapping[str, str]) -> str | None:
        experiment_id = self.experiment(create=False)
        if experiment_id is None:
            return None
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [experiment_id], where, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0].info.run_id if runs else None

    @overload
    def experiment(self, *, create: Literal[True]) -> str: ...

    @overload
    def experiment(self, *, create: Literal[False]) -> str | None: ...

    def experiment(self, *, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment_name)
            if found is not None:
                self._experiment_id = found.experiment_id
            elif create:
                # Named after the experiment (ids are not known before it exists); runs get their own subfolders.
                location = (
                    None
                    if self.remote
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
