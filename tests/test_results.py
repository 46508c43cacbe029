import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ovit_ray.orchestration.results.parquet import append_rows, read_rows

KEY = ["strategy", "target"]
SCHEMA = pa.schema(
    [("strategy", pa.string()), ("target", pa.float64()), ("top1", pa.float64()), ("note", pa.string())]
)


def test_overlapping_keys_never_duplicate_or_overwrite(tmp_path):
    path = tmp_path / "results.parquet"
    assert (
        append_rows(
            path,
            [
                {"strategy": "sweep", "target": 0.5, "top1": 0.9},
                {"strategy": "sweep", "target": 0.6, "top1": 0.85},
            ],
            KEY,
            SCHEMA,
        )
        == 2
    )
    resumed = [
        {"strategy": "sweep", "target": 0.6, "top1": 0.1},  # already finished: must not replace
        {"strategy": "sweep", "target": 0.75, "top1": 0.8},
        {"strategy": "sweep", "target": 0.75, "top1": 0.2},  # duplicate inside the batch
    ]
    assert append_rows(path, resumed, KEY, SCHEMA) == 1
    assert append_rows(path, resumed, KEY, SCHEMA) == 0
    assert read_rows(path) == [
        {"strategy": "sweep", "target": 0.5, "top1": 0.9, "note": None},
        {"strategy": "sweep", "target": 0.6, "top1": 0.85, "note": None},
        {"strategy": "sweep", "target": 0.75, "top1": 0.8, "note": None},
    ]


def test_columns_added_to_the_schema_later_are_null_in_older_rows(tmp_path):
    path = tmp_path / "r.parquet"
    append_rows(path, [{"target": 0.5, "strategy": "sweep", "top1": 0.9}], KEY, SCHEMA.remove(3))
    wider = SCHEMA.append(pa.field("gpu_hours", pa.float64()))
    append_rows(path, [{"strategy": "independent", "target": 0.5, "gpu_hours": 1.5}], KEY, wider)
    table = pq.read_table(path)
    assert table.schema.equals(wider)  # schema order and types, whatever order rows list their keys in
    assert read_rows(path) == [
        {"strategy": "sweep", "target": 0.5, "top1": 0.9, "note": None, "gpu_hours": None},
        {"strategy": "independent", "target": 0.5, "top1": None, "note": None, "gpu_hours": 1.5},
    ]


def test_columns_outside_the_schema_are_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "r.parquet"
    with pytest.raises(ValueError, match=r"\['typo'\] are not in the .* schema"):
        append_rows(path, [{"strategy": "sweep", "target": 0.5, "typo": 1}], KEY, SCHEMA)
    assert not path.exists()


# A value the column's type cannot hold fails before anything is written.
@pytest.mark.parametrize("bad", [object(), "not a number"])
def test_failed_write_leaves_previous_file_intact_and_no_temp_files(tmp_path, bad):
    path = tmp_path / "r.parquet"
    append_rows(path, [{"strategy": "sweep", "target": 0.5, "top1": 0.9}], KEY, SCHEMA)
    before = path.read_bytes()
    with pytest.raises(pa.ArrowException):
        append_rows(path, [{"strategy": "sweep", "target": 0.6, "top1": bad}], KEY, SCHEMA)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["r.parquet"]


def test_bad_inputs_are_named(tmp_path):
    path = tmp_path / "r.parquet"
    with pytest.raises(ValueError, match="target"):
        append_rows(path, [{"strategy": "sweep"}], KEY, SCHEMA)
    with pytest.raises(ValueError, match="key_columns"):
        append_rows(path, [{"top1": 1}], [], SCHEMA)
    with pytest.raises(FileNotFoundError, match="r.parquet"):
        read_rows(path)
