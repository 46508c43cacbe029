"""The Parquet files of an output folder: one schema family for every kind, built from the declarations.

`results.parquet` holds one row per trial and target: who (sweep, kind, trial), the shared result columns
(`training.result.TargetResult`), the kind's own result columns, then every knob of the kind's spec.
`trials.parquet` holds one row per trial however it ended: status, totals (objectives, epochs, loop and
allocated hours), knobs. Column types come from the declarations (`ovit_ray.knobs.knob_infos`), never from
the values, so no column is typed `null`, a column means the same in every kind, and files of different
kinds read as one table (`duckdb.read_parquet([...], union_by_name=true)`). Units are in the names
(`_seconds`, `_hours`, `_ms`); lists are Arrow lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields as dataclass_fields

import pyarrow as pa
from pydantic import BaseModel

from ovit_ray.knobs import knob_infos
from ovit_ray.orchestration.kinds import ExperimentKind
from ovit_ray.training.result import TargetResult

__all__ = [
    "IDENTITY",
    "KIND_KEY",
    "RESULTS_KIND",
    "TRIAL_STATUSES",
    "TRIAL_TOTALS",
    "TRIALS_KIND",
    "file_kind",
    "results_schema",
    "trials_schema",
]

KIND_KEY = b"ovit_ray.file_kind"
EXPERIMENT_KEY = b"ovit_ray.experiment_kind"
RESULTS_KIND, TRIALS_KIND = "results", "trials"
STR, INT, FLOAT = pa.string(), pa.int64(), pa.float64()
_ARROW = {int: INT, float: FLOAT, str: STR, bool: pa.bool_()}

IDENTITY = [pa.field("sweep", STR), pa.field("kind", STR), pa.field("trial_id", STR)]
TRIAL_STATUSES = ("finished", "stopped_early", "failed", "interrupted")
# Per trial: the objectives a searcher can use (`kinds.sweep_file.OBJECTIVES`), what it trained and spent.
# Loop hours are measured inside the workers; allocated hours are what a cluster bills: the resources the
# trial held x the wall time from its placement to its release (start-up, data loading, uploads included).
TRIAL_TOTALS = [
    pa.field(name, kind)
    for name, kind in (
        ("targets_done", INT),
        ("top1_final", FLOAT),
        ("top1_mean", FLOAT),
        ("val_top1_final", FLOAT),
        ("val_top1_mean", FLOAT),
        ("epochs_total", INT),
        ("cpu_hours", FLOAT),
        ("gpu_hours", FLOAT),
        ("allocated_cpu_hours", FLOAT),
        ("allocated_gpu_hours", FLOAT),
        ("trial_seconds", FLOAT),
    )
]


def _result_fields() -> list[pa.Field]:
    types = {"float | None": FLOAT, "int | None": INT, "str | None": STR, "float": FLOAT}
    return [pa.field(f.name, types[str(f.type)]) for f in dataclass_fields(TargetResult) if f.name != "extra"]


def declared_fields(model: type[BaseModel]) -> list[pa.Field]:
    """A column per field of a knob or result model, typed by its declaration."""
    return [
        pa.field(info.name, pa.list_(_ARROW[info.scalar]) if info.many else _ARROW[info.scalar])
        for info in knob_infos(model).values()
    ]


def _schema(file: str, kind: ExperimentKind, *groups: Iterable[pa.Field]) -> pa.Schema:
    seen: dict[str, pa.Field] = {}
    for column in (c for group in groups for c in group):
        if column.name in seen and seen[column.name].type != column.type:
            raise TypeError(
                f"{kind.name}: column {column.name} is {seen[column.name].type} and {column.type}"
            )
        seen.setdefault(column.name, column)
    metadata = {KIND_KEY: file.encode(), EXPERIMENT_KEY: kind.name.encode()}
    return pa.schema(list(seen.values()), metadata=metadata)


def results_schema(kind: ExperimentKind) -> pa.Schema:
    """`results.parquet` of a sweep of `kind`: who, the shared results, the kind's results, its knobs."""
    return _schema(
        RESULTS_KIND,
        kind,
        IDENTITY,
        _result_fields(),
        declared_fields(kind.result),
        declared_fields(kind.spec),
    )


def trials_schema(kind: ExperimentKind) -> pa.Schema:
    """`trials.parquet`: who, how the trial ended, its totals, its knobs."""
    status = [pa.field("status", STR), pa.field("error", STR)]
    return _schema(TRIALS_KIND, kind, IDENTITY, status, TRIAL_TOTALS, declared_fields(kind.spec))


def file_kind(schema: pa.Schema) -> tuple[str | None, str | None]:
    """(file kind, experiment kind) recorded in a file's schema metadata (None for older files)."""
    meta = schema.metadata or {}
    return (meta.get(KIND_KEY, b"").decode() or None, meta.get(EXPERIMENT_KEY, b"").decode() or None)
