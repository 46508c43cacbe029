"""Parquet files: one schema family for every experiment kind, built from the declarations (no null-typed or
JSON columns, a column name means one type everywhere), readable by others, and output folders of the same or
of different kinds read as one table by pyarrow.dataset and duckdb."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ovit_ray.orchestration.kinds import get_kind, kind_names
from ovit_ray.orchestration.kinds.gradual import GradualSpec
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import (
    RESULTS_KIND,
    TRIALS_KIND,
    file_kind,
    results_schema,
    trials_schema,
)
from ovit_ray.training.result import TargetResult

KEY = ["trial_id", "target"]


def _schemas() -> list[tuple[str, str, pa.Schema]]:
    """(experiment kind, file kind, schema) of every registered kind's two files."""
    return [
        (name, file, schema(get_kind(name)))
        for name in kind_names()
        for file, schema in ((RESULTS_KIND, results_schema), (TRIALS_KIND, trials_schema))
    ]


def test_every_kind_has_both_schemas_with_a_typed_column_per_knob() -> None:
    assert {"gradual", "oneshot", "structured", "depth", "transfer"} <= set(kind_names())
    for name, file, schema in _schemas():
        assert file_kind(schema) == (file, name)
        assert set(get_kind(name).spec.model_fields) <= set(schema.names), (name, file)
        assert schema.names[:3] == ["sweep", "kind", "trial_id"]
        if file == RESULTS_KIND:
            assert set(TargetResult.columns()) <= set(schema.names)
            assert set(get_kind(name).result.model_fields) <= set(schema.names)
        else:
            assert {"status", "error", "allocated_cpu_hours", "cpu_hours", "epochs_total"} <= set(
                schema.names
            )


def test_no_schema_has_a_null_typed_or_json_column() -> None:
    for name, file, schema in _schemas():
        where = (name, file)
        assert len(set(schema.names)) == len(schema.names), where
        assert not [f.name for f in schema if pa.types.is_null(f.type)], where
        assert not [n for n in schema.names if n.endswith(("_time", "_secs", "_s", "duration"))], where
    # a list knob is an Arrow list, never a JSON string
    assert results_schema(get_kind("gradual")).field("targets").type == pa.list_(pa.float64())
    assert results_schema(get_kind("structured")).field("budgets").type == pa.list_(pa.float64())


def test_a_column_name_has_one_type_in_every_kind() -> None:
    types: dict[str, dict[str, pa.DataType]] = {}
    for name, file, schema in _schemas():
        for field in schema:
            types.setdefault(field.name, {})[f"{name} {file}"] = field.type
    mixed = {column: seen for column, seen in types.items() if len(set(seen.values())) > 1}
    assert not mixed
    assert len(types["seed"]) >= 2 * 4  # a shared knob, declared once, typed once


def _gradual_rows(trial: str, sweep: str, **knobs: object) -> list[dict]:
    """What a finished gradual trial writes, with the values a quickstart trial leaves None (checkpoint, ...)."""
    values = GradualSpec(targets=[0.5, 0.9], **knobs).model_dump()
    return [
        {
            "sweep": sweep,
            "kind": "gradual",
            "trial_id": trial,
            **values,
            "target": t,
            "achieved_sparsity": t,
            "top1": 0.9 - t / 10,
            "best_epoch": 1,
            "epochs_trained": 2,
            "cpu_hours": 0.001,
            "gpu_hours": 0.0,
            "kept_model": None,
        }
        for t in (0.5, 0.9)
    ]


def test_two_sweeps_concatenate_in_pyarrow_dataset_and_duckdb(tmp_path: Path) -> None:
    schema = results_schema(get_kind("gradual"))
    a, b = tmp_path / "a" / "results.parquet", tmp_path / "b" / "results.parquet"
    append_rows(a, _gradual_rows("t1", "a"), KEY, schema)
    # The second sweep sets what the first left None, so inferred types would differ (null vs string).
    append_rows(
        b,
        _gradual_rows("t2", "b", checkpoint="w.safetensors", block_size=32, max_steps_per_epoch=5),
        KEY,
        schema,
    )
    for path in (a, b):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert pq.read_schema(path).remove_metadata().equals(schema.remove_metadata())
    table = ds.dataset([str(a), str(b)], format="parquet").to_table()
    assert table.num_rows == 4 and table.schema.field("targets").type == pa.list_(pa.float64())
    assert sorted(set(table["checkpoint"].to_pylist()), key=str) == [None, "w.safetensors"]
    got = duckdb.sql(
        f"SELECT sweep, count(*), max(len(targets)), max(max_steps_per_epoch) "
        f"FROM read_parquet(['{a}', '{b}']) GROUP BY sweep ORDER BY sweep"
    ).fetchall()
    assert got == [("a", 2, 2, None), ("b", 2, 2, 5)]


def test_duckdb_joins_folders_of_different_kinds_by_name(tmp_path: Path) -> None:
    """A gradual and a structured sweep: one table, shared columns aligned, each kind's own ones null elsewhere."""
    gradual, structured = tmp_path / "g" / "results.parquet", tmp_path / "s" / "results.parquet"
    append_rows(gradual, _gradual_rows("g1", "g"), KEY, results_schema(get_kind("gradual")))
    shrunk = [
        {
            "sweep": "s",
            "kind": "structured",
            "trial_id": "s1",
            "target": budget,
            "top1": 0.8,
            "macs_ratio": budget,
            "speedup_throughput": 1 / budget,
            "method": "optin",
            "budgets": [0.7, 0.5],
            "seed": 0,
            "heads_kept": [2, 1],
        }
        for budget in (0.7, 0.5)
    ]
    append_rows(structured, shrunk, KEY, results_schema(get_kind("structured")))
    got = duckdb.sql(
        "SELECT kind, count(*), max(top1), max(len(targets)), max(len(budgets)), max(speedup_throughput), "
        "count(DISTINCT method), max(seed) "
        f"FROM read_parquet(['{gradual}', '{structured}'], union_by_name = true) GROUP BY kind ORDER BY kind"
    ).fetchall()
    assert got == [("gradual", 2, 0.85, 2, None, None, 1, 0), ("structured", 2, 0.8, None, 2, 2.0, 1, 0)]
    methods = duckdb.sql(
        f"SELECT DISTINCT method FROM read_parquet(['{gradual}', '{structured}'], union_by_name = true) "
        "ORDER BY method"
    ).fetchall()
    assert methods == [("optin",), ("ovit",)]  # the pruning method and the structured scorer: one column
