"""The trials table of `ovit-ray report`: one row per trial, best first, in 80 columns.

Works on every output folder (every command writes a sweep folder: results.parquet per trial and target,
trials.parquet per trial, stopped-early and failed trials included). Columns: rank, best mark, trial,
status, every knob that varies across trials (the labels their declarations give: B, m, λ), top-1 (%) at
each target, the objective when it is not one of those, epochs, loop and allocated GPU- or CPU-hours.
Text output wraps whole columns into blocks that fit the width (the rank repeats in each block);
`wide` prints one block, CSV and markdown are for pasting.
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ovit_ray.knobs import knob_infos, short_value
from ovit_ray.orchestration.kinds import get_kind, kind_names
from ovit_ray.orchestration.specs.labels import CORE, display_value
from ovit_ray.training.result import TargetResult

Row = Mapping[str, Any]
STATUS_TEXT = {
    "finished": "done",
    "stopped_early": "stopped",
    "failed": "failed",
    "interrupted": "interrupted",
}
# Columns of a results row that are not knobs (who, and what was measured).
NOT_KNOBS = {"sweep", "kind", "trial_id", "status", "error", *TargetResult.columns()}
DEFAULT_OBJECTIVE = ("val_top1_final", "max")  # the sweeps' default: select on validation, report test


@dataclass(frozen=True)
class Column:
    key: str  # full name (CSV header)
    short: str  # text and markdown header
    numeric: bool = True


@dataclass(frozen=True)
class TrialTable:
    columns: list[Column]
    rows: list[dict[str, str]]  # cell text by column key, best first
    legend: str


def sweep_objective(out: Path) -> tuple[str, str]:
    """(metric, mode) of the sweep's first objective (sweep.yaml copy in the output), else top-1 at the end."""
    copy = out / "sweep.yaml"
    if copy.is_file():
        objectives = (yaml.safe_load(copy.read_text()) or {}).get("search", {}).get("objectives")
        if objectives:
            return objectives[0]["metric"], objectives[0]["mode"]
    return DEFAULT_OBJECTIVE


def knob_labels(results: Sequence[Row]) -> dict[str, str]:
    """Knob -> its short label, from the declarations of the kind that wrote the rows (else the names)."""
    kind = next((r.get("kind") for r in results if r.get("kind")), None)
    if kind in kind_names():
        return {name: info.label for name, info in knob_infos(get_kind(str(kind)).spec).items()}
    return {}


def _trials(results: Sequence[Row], trials: Sequence[Row]) -> list[dict[str, Any]]:
    """One dict per trial: its knobs and totals, `targets` {sparsity: top-1}, `status`, and file order."""
    by_id: dict[str, dict[str, Any]] = {}
    for order, t in enumerate(trials):
        by_id[t["trial_id"]] = {**t, "targets": {}, "order": order}
    for r in results:
        entry = by_id.setdefault(
            r["trial_id"], {**r, "status": "running", "targets": {}, "val": {}, "order": len(by_id)}
        )
        entry["targets"][r["target"]] = r["top1"]
        entry.setdefault("val", {})[r["target"]] = r.get("val_top1")
    for entry in by_id.values():
        for prefix, done in (("", entry["targets"]), ("val_", entry.get("val", {}))):
            if not done or None in done.values():
                continue
            totals = {
                f"{prefix}top1_final": done[max(done)],
                f"{prefix}top1_mean": sum(done.values()) / len(done),
            }
            entry.update({key: value for key, value in totals.items() if entry.get(key) is None})
    return list(by_id.values())


def rank_trials(trials: Sequence[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Best first: the objective, then mean top-1 over targets (validation top-1 when the objective is a
    validation one), then the earliest trial; trials without the objective (stopped early, failed) follow,
    most trained first."""
    sign = -1 if mode == "max" else 1
    mean = "val_top1_mean" if metric.startswith("val_") else "top1_mean"

    def key(t: Mapping[str, Any]) -> tuple:
        value = t.get(metric)
        if value is None:
            return (1, -(t.get("epochs_total") or 0), t["order"])
        return (0, sign * value, -(t.get(mean) or 0.0), t["order"])

    return sorted(trials, key=key)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def best_first(
    out: str | Path, results: Sequence[Row], trials: Sequence[Row] = ()
) -> tuple[str, str, list[dict[str, Any]]]:
    """(objective metric, mode, trials best first): THE best-trial rule (`rank_trials`), also used by
    best_config.json, the MLflow parent's `best.*` tags and `ovit-ray export --trial best`."""
    metric, mode = sweep_objective(Path(out))
    entries = _trials(results, trials)
    if (metric, mode) == DEFAULT_OBJECTIVE and all(t.get(metric) is None for t in entries):
        metric = "top1_final"  # results written before the validation split existed
    return metric, mode, rank_trials(entries, metric, mode)


def knobs_that_vary(trials: Sequence[Row]) -> list[str]:
    """Knobs with more than one value across `trials` (the searched ones, in effect), sorted; values are
    compared by their repr, so list-valued knobs (patterns) count too."""
    names = {k for t in trials for k in t if k not in NOT_KNOBS and not k.startswith(("top1_", "val_top1_"))}
    names -= {"targets_done", "epochs_total", "trial_seconds", "order", "val", "targets"}
    names -= {k for k in names if k.endswith("_hours")}
    return sorted(k for k in names if len({repr(t.get(k)) for t in trials}) > 1)


def trial_table(out: str | Path, results: Sequence[Row], trials: Sequence[Row] = ()) -> TrialTable:
    """The table for an output folder's rows (see the module docstring)."""
    metric, mode, ranked = best_first(out, results, trials)
    varying = knobs_that_vary(ranked)
    knobs = [k for k in CORE if k in varying] + sorted(k for k in varying if k not in CORE)
    labels = knob_labels(results)
    targets = sorted({s for t in ranked for s in t["targets"] if s is not None})
    unit = "gpu" if any(t.get("allocated_gpu_hours") for t in ranked) else "cpu"
    columns = [
        Column("rank", "#"),
        Column("best", "", False),
        Column("trial", "trial", False),
        Column("status", "status", False),
    ]
    columns += [Column(k, labels.get(k, k), False) for k in knobs]
    columns += [Column(f"top1_at_{s:g}", f"@{100 * s:g}") for s in targets]
    if not targets:
        columns.append(Column("top1", "top1"))
    shown_objective = metric not in ("top1_final", "epochs_total", f"{unit}_hours")
    if shown_objective:
        columns.append(Column(metric, metric.replace("top1_", "")))
    columns += [
        Column("epochs", "ep"),
        Column(f"{unit}_hours", f"{unit.upper()}-h"),
        Column(f"allocated_{unit}_hours", "held"),
    ]
    rows = []
    for rank, t in enumerate(ranked, 1):
        cells = {
            "rank": str(rank),
            "best": "*" if rank == 1 and t.get(metric) is not None else "",
            "trial": str(t.get("trial_id")),
            "status": STATUS_TEXT.get(t.get("status", "finished"), "?"),
        }
        cells.update({k: display_value(t.get(k)) for k in knobs})
        cells.update({f"top1_at_{s:g}": _percent(t["targets"].get(s)) for s in targets})
        if not targets:
            cells["top1"] = _percent(next(iter(t["targets"].values()), None))
        if shown_objective:
            value = t.get(metric)
            cells[metric] = _percent(value) if "top1" in metric else _hours(value)
        cells["epochs"] = "-" if t.get("epochs_total") is None else str(t["epochs_total"])
        cells[f"{unit}_hours"] = _hours(t.get(f"{unit}_hours"))
        cells[f"allocated_{unit}_hours"] = _hours(t.get(f"allocated_{unit}_hours"))
        rows.append(cells)
    names = ", ".join(f"{labels[k]} = {k}" for k in knobs if labels.get(k, k) != k)
    target = next(
        (get_kind(str(r["kind"])).target_name for r in results if r.get("kind") in kind_names()), "target"
    )
    legend = (
        f"sorted by {mode} {metric}, then mean top-1, then the earliest trial; * best; "
        f"@S: test top-1 (%) at S % {target}; ep: epochs trained; {unit.upper()}-h: hours in the training "
        f"loop; held: {unit.upper()}-hours allocated (start-up included); stopped: stopped early (ASHA)"
        + (f"; {names}" if names else "")
    )
    return TrialTable(columns, rows, legend)


def _blocks(widths: Sequence[int], width: int, keep: int) -> list[list[int]]:
    """Column indices per block: the first `keep` columns in each, the rest filled in order up to `width`."""
    blocks: list[list[int]] = []
    current = list(range(keep))
    used = sum(widths[:keep]) + 2 * (keep - 1)
    for i in range(keep, len(widths)):
        if len(current) > keep and used + 2 + widths[i] > width:
            blocks.append(current)
            current, used = list(range(keep)), sum(widths[:keep]) + 2 * (keep - 1)
        current.append(i)
        used += 2 + widths[i]
    blocks.append(current)
    return blocks


def render_text(table: TrialTable, width: int | None = 80, keep: int = 2) -> str:
    """Aligned columns; with a width, wrapped into blocks that fit, the first `keep` columns in each
    (None: one block, `--wide`)."""
    cols = table.columns
    widths = [max(len(c.short), *(len(r[c.key]) for r in table.rows)) for c in cols]
    blocks = [list(range(len(cols)))] if width is None else _blocks(widths, width, keep=keep)
    lines: list[str] = []
    for block in blocks:
        if lines:
            lines.append("")

        def line(texts: Mapping[int, str], block: list[int] = block) -> str:
            return "  ".join(
                texts[i].rjust(widths[i]) if cols[i].numeric else texts[i].ljust(widths[i]) for i in block
            ).rstrip()

        lines.append(line({i: cols[i].short for i in block}))
        lines.append(line({i: "-" * widths[i] for i in block}))
        lines += [line({i: r[cols[i].key] for i in block}) for r in table.rows]
    if not table.legend:
        return "\n".join(lines)
    legend = textwrap.fill(table.legend, width) if width else table.legend
    return "\n".join([*lines, "", legend])


def plain_table(rows: Sequence[Mapping[str, Any]], title: str, width: int | None = 80) -> str:
    """Any list of rows as aligned text that fits `width` (whole columns wrapped into blocks, the first
    repeated), the way the trials table is: no cell is cut."""
    if not rows:  # no columns to show either (a comparison with one seed has no pairs)
        return f"{title}\n(none)\n"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    numeric = {k: all(isinstance(r.get(k), int | float) for r in rows if r.get(k) is not None) for k in keys}
    columns = [Column(k, k, numeric[k]) for k in keys]
    cells = [{k: short_value(r.get(k)) if numeric[k] else str(r.get(k, "-")) for k in keys} for r in rows]
    table = render_text(TrialTable(columns, cells, ""), width, keep=1)
    return f"{title}\n{table.rstrip()}\n"


def render_csv(table: TrialTable) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in table.columns])
    writer.writerows([[r[c.key] for c in table.columns] for r in table.rows])
    return buffer.getvalue()


def render_markdown(table: TrialTable) -> str:
    header = "| " + " | ".join(c.short or "best" for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|"
    body = ["| " + " | ".join(r[c.key] for c in table.columns) + " |" for r in table.rows]
    return "\n".join([header, rule, *body, "", table.legend]) + "\n"
