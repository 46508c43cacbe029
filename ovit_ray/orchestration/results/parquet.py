"""Results in Parquet files: keyed, append-only, typed by an explicit schema, written atomically.

Why append-only by key: a resumed sweep re-reports targets it had already finished; those rows
must neither duplicate nor replace the finished ones. Why atomic: a killed job must never leave
a half-written results file behind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from ovit_ray.orchestration.common.atomic import write_atomic
from ovit_ray.orchestration.results.schemas import file_kind


def _key(row: Mapping[str, Any], key_columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in key_columns)


def append_rows(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    key_columns: Sequence[str],
    schema: pa.Schema,
    *,
    replace: bool = False,
) -> int:
    """Add the rows whose key is new (first one wins within ``rows``); returns how many were added.
    ``replace``: a row whose key is already there replaces it instead (a trial's status row, rewritten
    when an interrupted trial ends after a resume).

    Columns and types come from ``schema`` (see ``schemas``): cells a row lacks are null, a column the
    schema lacks is refused, and an older file is brought to the schema (new columns as nulls).
    """
    if not key_columns:
        raise ValueError(f"key_columns must name at least one column, got {list(key_columns)!r}")
    unknown = sorted({c for r in rows for c in r} - set(schema.names))
    if unknown:
        raise ValueError(
            f"column(s) {unknown} are not in the {file_kind(schema)[0]} schema "
            "(add them in ovit_ray/orchestration/results/schemas.py)"
        )
    for i, row in enumerate(rows):
        missing = [k for k in key_columns if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks key column(s) {missing}: {dict(row)!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        existing = _conform(pq.read_table(path), schema, path) if path.exists() else None
        seen = set()
        if existing is not None and replace:
            new = {_key(r, key_columns) for r in rows}
            keep = [_key(r, key_columns) not in new for r in existing.select(list(key_columns)).to_pylist()]
            existing = existing.filter(pa.array(keep, pa.bool_()))
        if existing is not None:
            seen = {_key(r, key_columns) for r in existing.select(list(key_columns)).to_pylist()}
        fresh = []
        for row in rows:
            key = _key(row, key_columns)
            if key not in seen:
                seen.add(key)
                fresh.append(row)
        if not fresh:
            return 0
        table = pa.Table.from_pylist(fresh, schema=schema)
        if existing is not None:
            table = pa.concat_tables([existing, table])
        write_atomic(path, lambda tmp: pq.write_table(table, tmp))
    return len(fresh)


def _conform(table: pa.Table, schema: pa.Schema, path: Path) -> pa.Table:
    """``table`` with exactly ``schema``'s columns and types (a file written by an older version)."""
    extra = sorted(set(table.column_names) - set(schema.names))
    if extra:
        raise ValueError(
            f"{path} has column(s) {extra} that the {file_kind(schema)[0]} schema lacks; "
            "it was written by another kind of command or version"
        )
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(len(table), field.type))
            continue
        column = table[field.name]
        if pa.types.is_string(column.type) and pa.types.is_list(field.type):  # lists once stored as JSON
            column = pa.array([None if v is None else json.loads(v) for v in column.to_pylist()], field.type)
        try:
            columns.append(column.cast(field.type))
        except pa.ArrowInvalid as err:
            raise ValueError(
                f"{path}: column {field.name} holds {column.type}, not {field.type}: {err}"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows in file order; a missing file raises ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file not found: {path}")
    return pq.read_table(path).to_pylist()
