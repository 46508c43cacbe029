"""Parquet file kinds: explicit schemas, no null-typed columns, readable by others, and two sweeps' files
read as one dataset by pyarrow.dataset and duckdb."""

from __future__ import annotations

import stat
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.schemas import GRADUAL_KNOBS, SCHEMAS, SWEEP_RESULTS, file_kind
from ovit_ray.orchestration.specs.run import PLACEMENT_FIELDS, GradualConfig
from ovit_ray.orchestration.tune.tracking import KEY_COLUMNS


def test_every_gradual_config_field_has_a_typed_column() -> None:
    assert [f.name for f in GRADUAL_KNOBS] == [
        n for n in GradualConfig.model_fields if n not in PLACEMENT_FIELDS
    ]


def test_no_schema_has_a_null_typed_or_json_column() -> None:
    for kind, schema in SCHEMAS.items():
        assert file_kind(schema) == kind
        assert len(set(schema.names)) == len(schema.names), kind
        assert not [f.name for f in schema if pa.types.is_null(f.type)], kind
    assert pa.types.is_list(SWEEP_RESULTS.field("targets").type)
    assert not [n for n in SWEEP_RESULTS.names if n.endswith(("_time", "_secs", "_s", "duration"))]


def _sweep_rows(trial: str, sweep: str, **knobs: object) -> list[dict]:
    """What a finished trial writes, with the values a quickstart trial leaves None (checkpoint, pattern, ...)."""
    values = GradualConfig(targets=[0.5, 0.9], **knobs).model_dump(exclude=PLACEMENT_FIELDS)
    return [
        {
            "trial_id": trial,
            "sweep": sweep,
            "strategy": "sweep",
            **values,
            "target_sparsity": t,
            "achieved_sparsity": t,
            "top1": 0.9 - t / 10,
            "best_epoch": 1,
            "epochs": 2,
            "cpu_hours": 0.001,
            "gpu_hours": 0.0,
            "best_checkpoint": None,
            "trial_seconds": 12.5,
        }
        for t in (0.5, 0.9)
    ]


def test_two_sweeps_concatenate_in_pyarrow_dataset_and_duckdb(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "results.parquet", tmp_path / "b" / "results.parquet"
    append_rows(a, _sweep_rows("t1", "a"), KEY_COLUMNS, SWEEP_RESULTS)
    # The second sweep sets what the first left None, so inferred types would differ (null vs string).
    append_rows(
        b,
        _sweep_rows("t2", "b", checkpoint="w.safetensors", block_size=32, max_steps_per_epoch=5),
        KEY_COLUMNS,
        SWEEP_RESULTS,
    )
    for path in (a, b):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        assert pq.read_schema(path).remove_metadata().equals(SWEEP_RESULTS.remove_metadata())
    table = ds.dataset([str(a), str(b)], format="parquet").to_table()
    assert table.num_rows == 4 and table.schema.field("targets").type == pa.list_(pa.float64())
    assert sorted(set(table["checkpoint"].to_pylist()), key=str) == [None, "w.safetensors"]
    got = duckdb.sql(
        f"SELECT sweep, count(*), max(len(targets)), max(max_steps_per_epoch) "
        f"FROM read_parquet(['{a}', '{b}']) GROUP BY sweep ORDER BY sweep"
    ).fetchall()
    assert got == [("a", 2, 2, None), ("b", 2, 2, 5)]
