"""Which output folders hold models to export, and which row of one a `--trial` / `--target` names.

Every kind writes the one `results.parquet` schema family (`results.schemas`): a row per trial and target,
its kept model in `kept_model` (relative to the folder, so a moved or copied folder exports its own files).
Kinds that keep no model (transfer) and folders that are not output folders at all are one error line naming
what the folder is and what export takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.best import best_trial
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.results.schemas import RESULTS_KIND, file_kind

ACCEPTS = "export takes the output folder of a sweep (`ovit-ray sweep`, `train`, `prune`, ...)"


@dataclass(frozen=True)
class SourceFolder:
    """An output folder export can take and its result rows."""

    path: Path
    rows: list[dict[str, Any]]

    def checkpoint(self, row: Mapping[str, Any]) -> str:
        """The row's kept model as stored (a path relative to the folder, an absolute path or a URI)."""
        value = row.get("kept_model")
        if not value:
            raise ValueError(f"{self.label(row)} in {self.path} has no kept model file in its row")
        return str(value)

    @staticmethod
    def label(row: Mapping[str, Any]) -> str:
        """How `--trial` names the row's trial."""
        return str(row.get("trial_id"))

    @staticmethod
    def target(row: Mapping[str, Any]) -> float | None:
        return None if row.get("target") is None else float(row["target"])

    def select(self, trial: str = "best", target: float | None = None) -> dict[str, Any]:
        """The row `trial` (an id, or `best` by `best_trial.RULE`) and `target` (default: the trial's
        highest) name."""
        if trial == "best":
            found = best_trial(self.path)
            if found is None:
                raise ValueError(f"{self.path}: no finished trial to export yet")
            trial = str(found[1]["trial_id"])
        own = [r for r in self.rows if self.label(r) == trial and r.get("kept_model")]
        if not own:
            known = ", ".join(sorted({self.label(r) for r in self.rows if r.get("kept_model")})[:20])
            raise ValueError(
                f"--trial: {trial!r} has no kept model in {self.path / RESULTS_FILE} (known: {known})"
            )
        if target is None:
            return max(own, key=lambda r: self.target(r) or 0.0)
        row = next((r for r in own if abs((self.target(r) or 0.0) - target) < 1e-9), None)
        if row is None:
            targets = ", ".join(f"{self.target(r):g}" for r in own)
            raise ValueError(f"--target: {target:g} is not a target of {trial} (targets: {targets})")
        return row


def open_source(source: str | os.PathLike) -> SourceFolder:
    """The folder as export reads it, or one error line saying what it is and what export takes."""
    path = Path(source)
    if not path.is_dir():
        raise FileNotFoundError(f"output folder not found: {path} ({ACCEPTS})")
    results = path / RESULTS_FILE
    if not results.is_file():
        raise ValueError(f"{path} is not an ovit-ray output folder (no {RESULTS_FILE}); {ACCEPTS}")
    try:
        written, _ = file_kind(pq.read_schema(results))
    except Exception as err:  # a damaged or foreign file
        detail = " ".join(str(err).split())[:200]
        raise ValueError(f"{results}: not a readable results file ({detail})") from None
    if written != RESULTS_KIND:
        what = f"{written} rows" if written else "rows without ovit-ray's schema (an older version's?)"
        raise ValueError(f"{results} holds {what}, not a sweep's results; {ACCEPTS}")
    rows = read_rows(results)
    if not any(r.get("kept_model") for r in rows):
        kinds = ", ".join(sorted({str(r.get("kind")) for r in rows})) or "no rows"
        raise ValueError(
            f"{path} is a sweep folder ({kinds}) with no kept model in any of its {len(rows)} row(s); "
            "transfer runs keep none, other kinds one per finished target"
        )
    return SourceFolder(path, rows)
