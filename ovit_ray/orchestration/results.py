"""Sweep results in one Parquet file: keyed, append-only, written atomically.

Why append-only by key: a resumed sweep re-reports targets it had already finished; those rows
must neither duplicate nor replace the finished ones. Why atomic: a killed job must never leave
a half-written results file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock
from rich.console import Console
from rich.table import Table


def _key(row: Mapping[str, Any], key_columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row[k] for k in key_columns)


def append_rows(path: str | Path, rows: Sequence[Mapping[str, Any]], key_columns: Sequence[str]) -> int:
    """Add the rows whose key is new (first one wins within ``rows``); returns how many were added.

    Existing columns keep their order, new ones follow in first-seen order; cells a row lacks are
    null. Numeric types widen where needed (int + float -> float).
    """
    if not key_columns:
        raise ValueError(f"key_columns must name at least one column, got {list(key_columns)!r}")
    for i, row in enumerate(rows):
        missing = [k for k in key_columns if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks key column(s) {missing}: {dict(row)!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        existing = pq.read_table(path) if path.exists() else None
        seen = set()
        if existing is not None:
            absent = [k for k in key_columns if k not in existing.column_names]
            if absent:
                raise ValueError(f"key column(s) {absent} are not in the existing file {path}")
            seen = {_key(r, key_columns) for r in existing.select(list(key_columns)).to_pylist()}
        fresh = []
        for row in rows:
            key = _key(row, key_columns)
            if key not in seen:
                seen.add(key)
                fresh.append(row)
        if not fresh:
            return 0
        columns = list(existing.column_names) if existing is not None else []
        columns += [c for c in dict.fromkeys(c for r in fresh for c in r) if c not in columns]
        table = pa.table({c: [r.get(c) for r in fresh] for c in columns if any(c in r for r in fresh)})
        if existing is not None:
            table = pa.concat_tables([existing, table], promote_options="permissive")
        _write_atomic(table.select(columns), path)
    return len(fresh)


def _write_atomic(table: pa.Table, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # pyarrow may have removed it already
            os.unlink(tmp)
        raise


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows in file order; a missing file raises ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file not found: {path}")
    return pq.read_table(path).to_pylist()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str | None = None
) -> Table:
    """Rich table of ``rows`` (default columns: all, in first-seen order)."""
    columns = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows for c in r))
    table = Table(title=title)
    for c in columns:
        table.add_column(
            c, justify="right" if any(isinstance(r.get(c), int | float) for r in rows) else "left"
        )
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in columns))
    return table


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    *,
    console: Console | None = None,
) -> None:
    (console or Console()).print(to_table(rows, columns, title))
