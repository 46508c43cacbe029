"""The MLflow store side of tracking: where a store lives, what a run carries, and one call applied to it.

`Store.execute` applies one call record (the same records the outbox keeps), so a call sent at once and
a call replayed after an outage take one path. A run created during an outage has a local id
``offline-<run key>``; the store finds the real run by its ``ovit.run_key`` tag.

Artifacts stay inside their folders, whatever a call or a folder says (issue 24.1). A queued call is data
in a folder that may come from someone else (`sync-mlflow` and a resumed run replay the outbox): an
`artifact_path` of `../../../../elsewhere/victim` overwrote a file outside every folder involved, and a
directory artifact holding a symlink uploaded the file it pointed to. So an `artifact_path` is relative
without `..`; a file a foreign call names resolves inside its folder, as does every symlink in a
directory it names (`contained`, used by the client); a local store copies only into its `artifacts/`,
whatever symlinks that folder holds (`copy_inside`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal, overload

from ovit_ray.orchestration.common.secrets import is_secret_key
from ovit_ray.orchestration.common.stores import (
    check_database_url,
    check_own_database,
    make_store_folder,
    sqlite_path,
)
from ovit_ray.orchestration.tracking.outbox import http_limits

# mlflow is imported where it is used: `sweep --dry-run` shows the default store and must not
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
# Tracking URIs MLflow resolves itself (Databricks workspaces); any other non-HTTP URI names a database.
MLFLOW_SCHEMES = ("databricks", "databricks-uc", "uc")
PROXIED = "mlflow-artifacts:"


class Pending(Exception):  # noqa: N818 (a state, not an error)
    """A run id is still offline-only: the call must wait in the outbox."""


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
        if remote and not uri.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError(f"MLflow tracking URI: {uri[:100]!r} names no server (http(s)://HOST:PORT)")
        if not remote and uri.split(":", 1)[0] not in MLFLOW_SCHEMES:
            check_own_database(uri, "mlflow", "MLflow tracking URI")
            check_database_url(uri, "MLflow tracking URI")
            make_store_folder(uri, "MLflow tracking URI")
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
            self.log_artifact(run_id, self.out_dir / record["path"], record["artifact_path"])
        elif op == "end_run":
            self.client.set_terminated(run_id, record["status"], record["end_time"])
        else:
            raise ValueError(f"unknown outbox op {op!r}")
        return None

    def create_run(self, record: dict[str, Any]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = dict(record["tags"])
        run_id = self.find_run({RUN_KEY_TAG: tags[RUN_KEY_TAG]})
        if run_id is None:
            if MLFLOW_PARENT_RUN_ID in tags:
                tags[MLFLOW_PARENT_RUN_ID] = self.real_id(tags[MLFLOW_PARENT_RUN_ID])
            experiment_id = self.experiment(create=True)
            run_id = self.client.create_run(
                experiment_id, record["start_time"], tags, record["run_name"]
            ).info.run_id
        self._ids[record["run_id"]] = run_id
        return run_id

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        """A proxied URI in a local store: copy into `artifacts/`, where a server started on the store serves
        it; never outside that folder, whatever the run's URI or a symlink there says (issue 24.1)."""
        check_artifact_path(artifact_path)
        uri = self.client.get_run(run_id).info.artifact_uri
        if self.remote or not uri.startswith(PROXIED):
            self.client.log_artifact(run_id, str(path), artifact_path)
            return
        root = self.artifacts_root
        copy_inside(path, root / uri.removeprefix(PROXIED).lstrip("/") / (artifact_path or ""), root)

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

        if self._experiment_id is not None:
            return self._experiment_id
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is None and create:
            # Named after the experiment (ids are not known before it exists); runs get their own subfolders.
            folder = re.sub(r"[^A-Za-z0-9_.-]", "_", self.experiment_name)
            location = None if self.remote else f"{PROXIED}/{folder}"
            try:
                self._experiment_id = self.client.create_experiment(
                    self.experiment_name, location, EXPERIMENT_KIND
                )
            except MlflowException as exc:  # another worker created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(self.experiment_name)
                if found is None:  # created and deleted again meanwhile: nothing to join
                    raise
        if found is not None:
            self._experiment_id = found.experiment_id
        return self._experiment_id


def check_artifact_path(artifact_path: str | None) -> None:
    """A place below the run's artifact root: relative, no `..`, no backslash or NUL."""
    if not artifact_path:
        return
    parts = PurePosixPath(artifact_path)
    if parts.is_absolute() or ".." in parts.parts or "\\" in artifact_path or "\x00" in artifact_path:
        raise ValueError(
            f"artifact_path: must be a relative path below the run's artifacts, without '..', "
            f"got {artifact_path!r}"
        )


def contained(path: Path, root: Path) -> Path:
    """`path` resolved; ``ValueError`` unless it, and every symlink below it, resolves inside `root`."""
    root = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"artifact {path} is outside {root}")
    for link in _links(resolved):
        if not link.resolve().is_relative_to(root):
            raise ValueError(f"artifact {path} holds a symlink {link.name} that leads outside {root}")
    return resolved


def copy_inside(source: Path, dest_dir: Path, root: Path) -> None:
    """Copy the file or directory `source` into `dest_dir` (as `dest_dir/<name>`), every path written
    resolving inside `root` and every symlink read inside `source`: a symlink planted in the store's
    folder cannot redirect the copy, one inside the artifact cannot pull in a file from elsewhere."""
    root = root.resolve()
    target = dest_dir / source.name
    if not target.resolve().is_relative_to(root):
        raise ValueError(f"artifact destination {target} leads outside {root}")
    if not source.is_dir():
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    contained(source, source)
    for folder, _, files in os.walk(source):  # symlinked folders are not followed (MLflow's walk neither)
        here = target / Path(folder).relative_to(source)
        for name in files:
            dest = here / name
            if not dest.resolve().is_relative_to(root):
                raise ValueError(f"artifact destination {dest} leads outside {root}")
            here.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(folder) / name, dest)


def _links(path: Path) -> Iterator[Path]:
    """Symlinks below a directory (none for a file): the entries a walk would read through."""
    if not path.is_dir():
        return
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            if (Path(folder) / name).is_symlink():
                yield Path(folder) / name
