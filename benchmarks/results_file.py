"""The machine-readable results file every benchmark script writes (issue 25): `benchmarks/results/<name>.json`.

BENCHMARKS.md is rendered from these files only (`render_benchmarks.py`), so a figure on the page is always
one a script measured (or one transcribed, with its date, commit and machine, from a run logged before the
scripts wrote files). The format, every key required unless marked optional:

    {"benchmark": "<name, = the file's stem>", "title": "one line", "command": "how to reproduce it",
     "date": "YYYY-MM-DD", "machine": "2-core <cpu>, 24 GB, no GPU; torch X, timm Y",
     "headline": [{"name": "what", "value": 1.23 or "text", "unit": "s", "caveat": "short, or empty",
                   optional "command" / "date" / "machine": where this figure differs from the file's}],
     "tables": [{"title": "...", "columns": ["a", "b"], "rows": [[1, 2]], optional "notes": "markdown"}],
     "notes": "markdown: what was measured, how, what it means",
     optional "commit": "<sha>", optional "load": "uptime's load average", optional "order": page position}

Scripts call `write_results`; it records the command line, the date, the machine and the load itself. A trial run
that must not replace the page's figures sets `OVIT_RAY_BENCH_RESULTS=/tmp/somewhere`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REQUIRED_KEYS = ("benchmark", "title", "command", "date", "machine", "headline", "tables", "notes")
HEADLINE_KEYS = ("name", "value", "unit", "caveat")
TABLE_KEYS = ("title", "columns", "rows")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_results(data: Mapping[str, Any], stem: str) -> None:
    """Raise ValueError naming the file and the field when `data` is not a valid results file `stem`.json."""

    def fail(field: str, why: str) -> None:
        raise ValueError(f"benchmarks/results/{stem}.json: {field}: {why}")

    for key in REQUIRED_KEYS:
        if key not in data:
            fail(key, "missing")
    if data["benchmark"] != stem:
        fail("benchmark", f"{data['benchmark']!r} differs from the file name {stem!r}")
    for key in ("title", "command", "machine", "notes"):
        if not isinstance(data[key], str):
            fail(key, "must be a string")
    if not isinstance(data["date"], str) or not DATE.match(data["date"]):
        fail("date", f"must be YYYY-MM-DD, got {data['date']!r}")
    if not isinstance(data["headline"], list) or not isinstance(data["tables"], list):
        fail("headline/tables", "must be lists")
    for i, item in enumerate(data["headline"]):
        missing = [k for k in HEADLINE_KEYS if k not in item]
        if missing:
            fail(f"headline[{i}]", f"missing {', '.join(missing)}")
        if "date" in item and not DATE.match(str(item["date"])):
            fail(f"headline[{i}].date", f"must be YYYY-MM-DD, got {item['date']!r}")
    for i, table in enumerate(data["tables"]):
        missing = [k for k in TABLE_KEYS if k not in table]
        if missing:
            fail(f"tables[{i}]", f"missing {', '.join(missing)}")
        width = len(table["columns"])
        for j, row in enumerate(table["rows"]):
            if not isinstance(row, list) or len(row) != width:
                fail(f"tables[{i}].rows[{j}]", f"needs {width} cells (one per column)")


def machine() -> str:
    """'N-core <cpu model>, M GB, <GPU or no GPU>; torch X, timm Y' of this process's machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), cpu)
    except OSError:
        pass
    memory = ""
    try:
        memory = f", {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    gpu = "no GPU"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    versions = []
    for package in ("torch", "timm"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    return f"{os.cpu_count()}-core {cpu}{memory}, {gpu}" + (f"; {', '.join(versions)}" if versions else "")


def command() -> str:
    """This process's command line as a user would type it from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(RESULTS_DIR.parents[1])
    except ValueError:
        pass
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    return f"{threads}.venv/bin/python {shlex.join([str(script), *sys.argv[1:]])}"


def load_average() -> str:
    try:
        return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return ""


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], notes: str = "") -> dict:
    out: dict[str, Any] = {"title": title, "columns": list(columns), "rows": [list(r) for r in rows]}
    if notes:
        out["notes"] = notes
    return out


def table_of_dicts(title: str, rows: Sequence[Mapping[str, Any]], notes: str = "") -> dict:
    """A table whose columns are the keys of `rows` (first-seen order); a missing key is an empty cell."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return table(title, columns, [[r.get(c) for c in columns] for r in rows], notes)


def tables_from_markdown(text: str, title: str = "") -> list[dict]:
    """Every pipe table in `text` (header, separator, rows) as a table; prose lines are dropped."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2:
            cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in block]
            found.append(table(title, cells[0], [r for r in cells[2:] if len(r) == len(cells[0])]))
        block = []
    return found


def headline(name: str, value: Any, unit: str = "", caveat: str = "", **where: str) -> dict:
    return {"name": name, "value": value, "unit": unit, "caveat": caveat, **where}


def write_results(
    benchmark: str,
    *,
    title: str,
    headline: Sequence[Mapping[str, Any]],
    tables: Sequence[Mapping[str, Any]],
    notes: str,
    results_dir: Path | None = None,
    **extra: Any,
) -> Path:
    """Write (replace) `<results_dir>/<benchmark>.json` for this run: the current result of `benchmark`.
    `$OVIT_RAY_BENCH_RESULTS` names another folder (trial runs that must not replace the page's figures)."""
    data = {
        "benchmark": benchmark,
        "title": title,
        "command": command(),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "load": load_average(),
        "headline": list(headline),
        "tables": list(tables),
        "notes": notes,
        **extra,
    }
    data = json.loads(json.dumps(data, default=str))  # tuples, paths and numpy scalars as plain JSON
    check_results(data, benchmark)
    folder = results_dir or Path(os.environ.get("OVIT_RAY_BENCH_RESULTS") or RESULTS_DIR)
    path = folder / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    partial.replace(path)
    print(f"results: {path} (render the page: .venv/bin/python benchmarks/render_benchmarks.py)")
    return path
