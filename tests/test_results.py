import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from ovit_ray.orchestration.results import append_rows, print_table, read_rows

KEY = ["strategy", "target"]


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
        )
        == 2
    )
    resumed = [
        {"strategy": "sweep", "target": 0.6, "top1": 0.1},  # already finished: must not replace
        {"strategy": "sweep", "target": 0.75, "top1": 0.8},
        {"strategy": "sweep", "target": 0.75, "top1": 0.2},  # duplicate inside the batch
    ]
    assert append_rows(path, resumed, KEY) == 1
    assert append_rows(path, resumed, KEY) == 0
    assert read_rows(path) == [
        {"strategy": "sweep", "target": 0.5, "top1": 0.9},
        {"strategy": "sweep", "target": 0.6, "top1": 0.85},
        {"strategy": "sweep", "target": 0.75, "top1": 0.8},
    ]


def test_new_columns_are_appended_and_back_filled_with_null(tmp_path):
    path = tmp_path / "r.parquet"
    append_rows(path, [{"target": 0.5, "strategy": "sweep", "epochs": 10}], KEY)
    append_rows(path, [{"strategy": "independent", "target": 0.5, "gpu_hours": 1.5, "epochs": 12.5}], KEY)
    table = pq.read_table(path)
    assert table.column_names == ["target", "strategy", "epochs", "gpu_hours"]
    assert str(table.schema.field("epochs").type) == "double"  # int widened by the float row
    assert read_rows(path) == [
        {"target": 0.5, "strategy": "sweep", "epochs": 10.0, "gpu_hours": None},
        {"target": 0.5, "strategy": "independent", "epochs": 12.5, "gpu_hours": 1.5},
    ]


# object(): conversion fails before writing; {}: Parquet rejects an empty struct while writing.
@pytest.mark.parametrize(("bad", "error"), [(object(), "object"), ({}, "struct")])
def test_failed_write_leaves_previous_file_intact_and_no_temp_files(tmp_path, bad, error):
    path = tmp_path / "r.parquet"
    append_rows(path, [{"strategy": "sweep", "target": 0.5, "top1": 0.9}], KEY)
    before = path.read_bytes()
    with pytest.raises(pa.ArrowException, match=error):
        append_rows(path, [{"strategy": "sweep", "target": 0.6, "extra": bad}], KEY)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["r.parquet"]


def test_bad_inputs_are_named(tmp_path):
    path = tmp_path / "r.parquet"
    with pytest.raises(ValueError, match="target"):
        append_rows(path, [{"strategy": "sweep"}], KEY)
    with pytest.raises(ValueError, match="key_columns"):
        append_rows(path, [{"a": 1}], [])
    with pytest.raises(FileNotFoundError, match="r.parquet"):
        read_rows(path)


def test_print_table_renders_rows():
    console = Console(record=True, width=100)
    rows = [{"target": 0.5, "top1": 0.812345, "note": None}, {"target": 0.9, "top1": 0.7}]
    print_table(rows, ["target", "top1", "note"], "Sweep vs independent", console=console)
    text = console.export_text()
    assert "Sweep vs independent" in text and "top1" in text
    assert "0.8123" in text and "0.812345" not in text
    assert "-" in text.splitlines()[-2]  # None shown as a dash
