"""Which output folders hold models to export, and which row of one a `--trial` / `--target` names.

A folder's kind is the one its `results.parquet` schema records (`results.schemas.KIND_KEY`): a sweep
and a train / compare-strategies folder keep a best checkpoint per (trial or run, target); a structured
folder (`prune --method optin|structured-magnitude`, structured and depth sweeps) keeps one model per run
key. Prune and transfer folders keep no model files: exporting from them, or from a folder that is not an
output folder at all, is one error line naming what the folder is and what export takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.best import best_trial
from ovit_ray.orchestration.results.parquet import read_rows

ACCEPTS = (
    "export takes the output folder of `ovit-ray sweep`, `train`, `compare-strategies`, or "
    "`prune --method optin|structured-magnitude` and structured / depth sweeps"
)


@dataclass(frozen=True)
class Layout:
    """How a results file's rows name their trial, their target and their kept model."""

    what: str
    model_column: str
    target_column: str | None  # None: one model per run key, no targets
    label_columns: tuple[str, ...]  # the columns `--trial` matches, the first names the row


# file kind (the schema's `KIND_KEY`) -> its layout; "results" is every sweep kind's one schema family
LAYOUTS = {
    "results": Layout("a sweep folder", "kept_model", "target", ("trial_id",)),
    "sweep_results": Layout("a sweep folder", "best_checkpoint", "target_sparsity", ("trial_id",)),
    "run_results": Layout(
        "a train / compare-strategies folder", "best_checkpoint", "target_sparsity", ("run_name", "run_key")
    ),
    "structured_results": Layout("a structured-pruning folder", "checkpoint", None, ("run_key",)),
}
NOT_EXPORTABLE = {
    "prune_results": "an `ovit-ray prune` folder of one-shot unstructured rows, which keep no model files",
    "transfer_results": "an `ovit-ray transfer` folder, whose rows keep no model files",
    "transfer_sources": "a transfer sweep's sources file",
    "trials": "a sweep's trials file",
    "sweep_trials": "a sweep's trials file",
    "regime_bench": "a benchmark results folder",
}
# files written before kinds were recorded, by a column only that kind has
_OLD_COLUMNS = (
    ("sweep_results", "trial_id"),
    ("run_results", "run_name"),
    ("structured_results", "heads_kept"),
)


def _kind(results: Path) -> str | None:
    """The kind the file's schema records; files older than the kinds by their columns."""
    import pyarrow.parquet as pq

    from ovit_ray.orchestration.results.schemas import KIND_KEY

    try:
        schema = pq.read_schema(results)
    except Exception as err:  # a damaged or foreign file
        detail = " ".join(str(err).split())[:200]
        raise ValueError(f"{results}: not a readable results file ({detail})") from None
    kind = (schema.metadata or {}).get(KIND_KEY, b"").decode() or None
    return kind or next((k for k, column in _OLD_COLUMNS if column in schema.names), None)


@dataclass(frozen=True)
class SourceFolder:
    """An output folder export can take, its rows and how they name their kept models."""

    path: Path
    kind: str  # the file kind, a key of LAYOUTS
    rows: list[dict[str, Any]]

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.kind]

    def checkpoint(self, row: Mapping[str, Any]) -> str:
        """The row's kept model as stored (a path relative to the folder, an absolute path or a URI)."""
        value = row.get(self.layout.model_column)
        if not value:
            raise ValueError(f"{self.label(row)} in {self.path} has no kept model file in its row")
        return str(value)

    def label(self, row: Mapping[str, Any]) -> str:
        """How `--trial` names the row's run: a trial id, a run name, or a structured run key."""
        return str(next((row[c] for c in self.layout.label_columns if row.get(c)), None))

    def target(self, row: Mapping[str, Any]) -> float | None:
        column = self.layout.target_column
        return None if column is None or row.get(column) is None else float(row[column])

    def select(self, trial: str = "best", target: float | None = None) -> dict[str, Any]:
        """The row `trial` (an id, run name or run key, or `best` by `best_trial.RULE`) and `target`
        (default: the trial's highest) name."""
        if self.layout.target_column is None:
            return self._by_run_key(trial, target)
        if trial == "best":
            try:
                found = best_trial(self.path)
            except (KeyError, TypeError, ValueError) as err:  # rows the ranking cannot read (an older file)
                raise ValueError(
                    f"--trial: cannot rank the trials of {self.path} ({type(err).__name__}: {err}); "
                    f"name one with --trial (known: {self._known()})"
                ) from None
            if found is None:
                raise ValueError(f"{self.path}: no finished trial to export yet")
            trial = str(found[1]["trial_id"])
        own = [r for r in self.rows if trial in [str(r.get(c)) for c in self.layout.label_columns]]
        if not own:
            raise ValueError(
                f"--trial: {trial!r} is not in {self.path / RESULTS_FILE} (known: {self._known()})"
            )
        if target is None:
            return max(own, key=lambda r: self.target(r) or 0.0)
        row = next((r for r in own if abs((self.target(r) or 0.0) - target) < 1e-9), None)
        if row is None:
            targets = ", ".join(f"{self.target(r):g}" for r in own)
            raise ValueError(f"--target: {target:g} is not a target of {trial} (targets: {targets})")
        return row

    def _known(self) -> str:
        return ", ".join(sorted({self.label(r) for r in self.rows})[:20])

    def _by_run_key(self, trial: str, target: float | None) -> dict[str, Any]:
        keys = sorted({str(r["run_key"]) for r in self.rows})
        if target is not None:
            raise ValueError(
                f"--target: {self.path} is {self.layout.what}, one model per run key and no targets; "
                f"drop --target {target:g}"
            )
        if trial == "best":
            raise ValueError(
                f"--trial: {self.path} is {self.layout.what}, one model per budget with no single best; "
                f"name one by its run key with --trial (run keys: {', '.join(keys[:20])})"
            )
        own = [r for r in self.rows if trial in (r.get("run_key"), f"{r.get('model')}/{r.get('run_key')}")]
        if len(own) != 1:
            problem = (
                "is not a run key"
                if not own
                else f"names {len(own)} models ({', '.join(r['model'] for r in own)}); use MODEL/RUN_KEY"
            )
            raise ValueError(
                f"--trial: {trial!r} {problem} in {self.path / RESULTS_FILE} (run keys: {', '.join(keys[:20])})"
            )
        return own[0]


def open_source(source: str | os.PathLike) -> SourceFolder:
    """The folder as export reads it, or one error line saying what it is and what export takes."""
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"output folder not found: {path} ({ACCEPTS})")
    results = path / RESULTS_FILE
    if not results.is_file():
        raise ValueError(f"{path} is not an ovit-ray output folder (no {RESULTS_FILE}); {ACCEPTS}")
    kind = _kind(results)
    if kind not in LAYOUTS:
        what = NOT_EXPORTABLE.get(kind or "", f"a folder of {kind or 'unknown'} rows")
        raise ValueError(f"{path} is {what}; {ACCEPTS}")
    rows = read_rows(results)
    column = LAYOUTS[kind].model_column
    if not any(r.get(column) for r in rows):
        kinds = sorted({str(r.get("kind") or kind) for r in rows})
        raise ValueError(
            f"{path} is {LAYOUTS[kind].what} ({', '.join(kinds)}) with no kept model in any of its "
            f"{len(rows)} row(s) yet; {ACCEPTS}"
        )
    return SourceFolder(path, kind, rows)
