"""Render BENCHMARKS.md from `benchmarks/results/*.json` (issue 25): the page cannot drift from what was measured.

The first screen is one table of every results file's headline numbers, each with the command that
reproduces it, its date and its machine, caveats beside the numbers; then one section per results file
(its command, tables and notes). Files are ordered by their optional `order` (default 50), then by name.
Superseded figures are not results files: they live in `benchmarks/HISTORY.md`.

    .venv/bin/python benchmarks/render_benchmarks.py            # rewrite BENCHMARKS.md
    .venv/bin/python benchmarks/render_benchmarks.py --check    # exit 1 when BENCHMARKS.md differs
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from results_file import RESULTS_DIR, check_results

PAGE = RESULTS_DIR.parents[1] / "BENCHMARKS.md"
RENDER = ".venv/bin/python benchmarks/render_benchmarks.py"
DEFAULT_ORDER = 50


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every results file, checked, in page order."""
    found = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        check_results(data, path.stem)
        found.append(data)
    return sorted(found, key=lambda d: (d.get("order", DEFAULT_ORDER), d["benchmark"]))


def cell(value: Any) -> str:
    """A table cell: numbers short, booleans as yes/no, None empty, pipes and newlines escaped."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """Inline code for a table cell (backticks inside are not expected in commands)."""
    return f"`{text}`".replace("|", "\\|") if text else ""


def markdown_table(columns: Sequence[Any], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _value(item: Mapping[str, Any]) -> str:
    unit = item["unit"]
    value = cell(item["value"])
    return f"{value} {unit}".strip() if unit not in ("%", "x") else f"{value}{unit}"


def headline_table(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per headline number; machines are long, so they are lettered and listed under the table."""
    machines: dict[str, str] = {}
    rows = []
    for data in results:
        for item in data["headline"]:
            where = item.get("machine", data["machine"])
            label = machines.setdefault(where, f"M{len(machines) + 1}")
            rows.append(
                "| "
                + " | ".join(
                    [
                        f"{cell(item['name'])} ([{cell(data['benchmark'])}](#{anchor(data['title'])}))",
                        f"**{_value(item)}**",
                        cell(item["caveat"]),
                        code(item.get("command", data["command"])),
                        cell(item.get("date", data["date"])),
                        label,
                    ]
                )
                + " |"
            )
    lines = ["| result | value | caveat | reproduce | date | machine |", "|---|---|---|---|---|---|", *rows]
    return [*lines, "", *(f"- {label}: {where}" for where, label in machines.items())]


def section(data: Mapping[str, Any]) -> list[str]:
    lines = [f"## {data['title']}", ""]
    facts = [f"`benchmarks/results/{data['benchmark']}.json`", data["date"]]
    facts += [f"commit {data['commit']}"] if data.get("commit") else []
    facts += [data["machine"]] + ([data["load"]] if data.get("load") else [])
    lines += ["; ".join(facts) + ".", "", f"    {data['command']}", ""]
    for table in data["tables"]:
        if table["title"]:
            lines += [f"**{table['title']}**", ""]
        lines += [*markdown_table(table["columns"], table["rows"]), ""]
        if table.get("notes"):
            lines += [table["notes"].strip(), ""]
    if data["notes"].strip():
        lines += [data["notes"].strip(), ""]
    return lines


def render(results: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated file: do not edit. Change benchmarks/results/*.json (benchmark scripts write them), "
        f"then run {RENDER}. -->",
        f"Generated from `benchmarks/results/*.json` by `{RENDER}`: do not edit this page by hand "
        "(`tests/test_benchmarks_page.py` fails when it differs from the render). Every number comes from a "
        "results file that a benchmark script wrote, or that was transcribed (with its date, commit and "
        "machine) from a run logged before the scripts wrote files. Superseded figures: "
        "[benchmarks/HISTORY.md](benchmarks/HISTORY.md).",
        "",
        "## Current headline numbers",
        "",
        *headline_table(results),
        "",
        "## Sections",
        "",
        *(f"- [{data['title']}](#{anchor(data['title'])})" for data in results),
        "",
    ]
    for data in results:
        lines += section(data)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=PAGE, help="page to write (default: BENCHMARKS.md)")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the page differs")
    args = parser.parse_args(argv)
    text = render(load_results())
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else f'differs from the results files; run {RENDER}'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
