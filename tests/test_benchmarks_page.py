"""BENCHMARKS.md is rendered from `benchmarks/results/*.json` and must equal its render (issue 25): nobody edits
the page by hand, and every results file carries what the page needs (command, date, machine, headline)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import render_benchmarks  # noqa: E402
from results_file import REQUIRED_KEYS, check_results, tables_from_markdown  # noqa: E402

RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_committed_page_equals_its_render(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    assert render_benchmarks.main(["--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "BENCHMARKS.md").read_text(), (
        "BENCHMARKS.md differs from the results files: run .venv/bin/python benchmarks/render_benchmarks.py"
    )
    assert render_benchmarks.main(["--check"]) == 0


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_file_has_the_required_keys(path):
    data = json.loads(path.read_text())
    assert set(REQUIRED_KEYS) <= set(data)
    check_results(data, path.stem)
    assert data["command"].strip() and data["machine"].strip()


def test_every_headline_number_is_on_the_first_screen_with_its_command():
    results = render_benchmarks.load_results()
    page = render_benchmarks.render(results)
    first_screen = page.split("\n## Sections", 1)[0]
    for data in results:
        for item in data["headline"]:
            assert render_benchmarks.cell(item["value"]) in first_screen
            assert render_benchmarks.code(item.get("command", data["command"])) in first_screen


def test_a_bad_results_file_is_named_with_its_field(tmp_path):
    good = {key: "" for key in REQUIRED_KEYS} | {
        "benchmark": "x",
        "date": "2026-12-01",
        "headline": [],
        "tables": [{"title": "t", "columns": ["a", "b"], "rows": [[1]]}],
    }
    with pytest.raises(ValueError, match=r"x\.json: tables\[0\]\.rows\[0\]"):
        check_results(good, "x")
    with pytest.raises(ValueError, match=r"x\.json: date"):
        check_results(good | {"date": "1 Dec"}, "x")
    with pytest.raises(ValueError, match=r"y\.json: benchmark"):
        check_results(good, "y")
    (tmp_path / "x.json").write_text(json.dumps(good | {"tables": []}))
    page = render_benchmarks.render(render_benchmarks.load_results(tmp_path))
    assert page.startswith("# Benchmarks\n") and "do not edit" in page


def test_markdown_tables_become_columns_and_rows():
    text = "prose\n| a | b |\n|---|---:|\n| 1 | `x` |\n\n| c |\n|---|\n| 2 |\n"
    found = tables_from_markdown(text, "t")
    assert [(t["columns"], t["rows"]) for t in found] == [(["a", "b"], [["1", "`x`"]]), (["c"], [["2"]])]
