"""`ovit-ray report`: one reader of every output folder (every kind writes the same files): the trials table
(`table`), the seed tables when seeds repeat, and PNG plots (matplotlib, Agg backend).

Plots: top-1 vs target per method / strategy with each group's Pareto frontier (no other point of the group
reaches a harder target with a better top-1), final top-1 vs every knob that varies, loop vs allocated hours
per strategy (what a cluster bills: start-up included), and, where rows carry measured speed, top-1 vs the
measured speed-up (`frontier`). Several folders (of any kinds) report one frontier together.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE  # noqa: E402
from ovit_ray.orchestration.results.frontier import SPEEDUP, frontier_rows, method_differences, plot_frontier  # noqa: E402
from ovit_ray.orchestration.results.parquet import read_rows  # noqa: E402
from ovit_ray.orchestration.results.stats import pairwise_table  # noqa: E402
from ovit_ray.orchestration.results.table import (  # noqa: E402
    best_first,
    knobs_that_vary,
    render_csv,
    render_markdown,
    render_text,
    trial_table,
)

__all__ = ["FORMATS", "Report", "pareto_front", "report", "seed_summary", "write_report_files"]

Row = Mapping[str, Any]
FORMATS = ("text", "csv", "markdown")
LOG_KNOBS = {"damp", "lr_max", "lr_min", "num_grads", "block_size"}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(target, top1) points that no other point beats on both, by increasing target."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front[::-1]


def _group(row: Row) -> str:
    return " / ".join(str(row[k]) for k in ("method", "strategy") if row.get(k) is not None) or str(
        row.get("kind")
    )


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_targets(rows: Sequence[Row], path: Path) -> Path:
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r.get("target") is not None:
            groups[_group(r)].append((float(r["target"]), float(r["top1"])))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(groups.items()):
        dots = ax.scatter(*zip(*points, strict=True), alpha=0.5, label=label)
        front = pareto_front(points)
        ax.step(*zip(*front, strict=True), where="post", color=dots.get_facecolor()[0], alpha=0.9)
    ax.set(xlabel="target", ylabel="test top-1", title="test top-1 vs target (lines: Pareto frontier)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_knob(trials: Sequence[Row], knob: str, path: Path) -> Path:
    values = [t.get(knob) for t in trials]
    finals = [float(t.get("top1_final") or "nan") for t in trials]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        ax.scatter(numbers, finals)
        if knob in LOG_KNOBS and min(numbers) > 0:
            ax.set_xscale("log")
    else:
        labels = sorted({str(v) for v in values})
        ax.scatter([labels.index(str(v)) for v in values], finals)
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=knob, ylabel="test top-1 at the final target", title=f"top-1 vs {knob}")
    return _save(fig, path)


def plot_compute(trials: Sequence[Row], path: Path) -> Path:
    """Loop and allocated hours per strategy (or kind): independent runs pay their start-up again and again."""
    unit = "gpu" if any(t.get("allocated_gpu_hours") for t in trials) else "cpu"
    loop: dict[str, float] = defaultdict(float)
    held: dict[str, float] = defaultdict(float)
    for t in trials:
        key = str(t.get("strategy") or t.get("kind"))
        loop[key] += t.get(f"{unit}_hours") or 0.0
        held[key] += t.get(f"allocated_{unit}_hours") or 0.0
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    names = sorted(held)
    ax.bar([i - 0.2 for i in range(len(names))], [held[n] for n in names], width=0.4, label="allocated")
    ax.bar([i + 0.2 for i in range(len(names))], [loop[n] for n in names], width=0.4, label="training loop")
    ax.set_xticks(range(len(names)), names)
    ax.set(ylabel=f"{unit.upper()}-hours (all trials)", title=f"{unit.upper()}-hours per strategy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _mean_std(values: Sequence[float], scale: float = 1.0) -> str:
    """'mean ± std' (sample std); a lone value is printed as it is: one seed has no spread."""
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _sort_key(value: Any) -> tuple[int, float | str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    return 1, str(value)


def seed_summary(rows: Sequence[Row], knobs: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (varying knobs but the seed, target): the ablation tables."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k) for k in knobs) + (r.get("target"),)].append(r)
    table = []
    for key, members in sorted(groups.items(), key=lambda item: tuple(_sort_key(v) for v in item[0])):
        line: dict[str, Any] = {**dict(zip(knobs, key[:-1], strict=True)), "target": key[-1]}
        line["seeds"] = len({m.get("seed") for m in members})
        line["top1 (%)"] = _mean_std([m["top1"] for m in members], 100)
        for name, scale in (("achieved_sparsity", 100), ("macs_ratio", 1), ("epochs_trained", 1)):
            values = [m[name] for m in members if m.get(name) is not None]
            if values:
                line[name] = _mean_std(values, scale)
        table.append(line)
    return table


def _markdown(table: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(line[c]) for c in columns) + " |" for line in table]


def _rows(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not out.is_dir():
        raise FileNotFoundError(f"output directory not found: {out}")
    if not (out / RESULTS_FILE).is_file():
        raise ValueError(
            f"{out}: not an ovit-ray output folder (no {RESULTS_FILE}); report reads the folder a sweep, train, transfer or prune wrote"
        )
    trials = read_rows(out / TRIALS_FILE) if (out / TRIALS_FILE).exists() else []
    rows = read_rows(out / RESULTS_FILE)
    if rows and "target" not in rows[0]:
        raise ValueError(
            f"{out / RESULTS_FILE}: written by an older ovit-ray (no `target` column); rerun the sweep into a new folder"
        )
    return rows, trials


def _seed_tables(rows: Sequence[Row], trials: Sequence[Row]) -> list[tuple[str, list[dict[str, Any]]]]:
    knobs = [k for k in knobs_that_vary(trials or rows) if k != "seed"]
    summary = seed_summary(rows, knobs)
    if not any(line["seeds"] > 1 for line in summary):
        return []
    tables = [("mean ± std over seeds", summary)]
    if differences := pairwise_table(rows, knobs or ["kind"]):
        tables.append(("test top-1 differences a - b (pp), Welch 95% CI, * = excludes 0", differences))
    return tables


def write_report_files(out: Path, others: Sequence[Path] = ()) -> list[Path]:
    """The plots of `out` (and one frontier over `others` too) under `out/plots`, and the seed tables."""
    rows, trials = _rows(out)
    _, _, ranked = best_first(out, rows, trials)
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if any(r.get("target") is not None for r in rows):
        paths.append(plot_targets(rows, folder / "top1_vs_target.png"))
    if ranked:
        paths.append(plot_compute(ranked, folder / "hours_per_strategy.png"))
        paths += [plot_knob(ranked, k, folder / f"top1_vs_{k}.png") for k in knobs_that_vary(ranked)]
    timed = [r for path in (out, *others) for r in _rows(path)[0] if r.get(SPEEDUP) is not None]
    if timed:
        paths.append(plot_frontier(timed, folder / "frontier.png"))
    if tables := _seed_tables(rows, trials):
        text = []
        for title, table in tables:
            text += [f"## {title}", "", *_markdown(table), ""]
        (folder / "seed_summary.md").write_text("\n".join(text))
        paths.append(folder / "seed_summary.md")
    return paths


@dataclass(frozen=True)
class Report:
    """What `report` found, for the caller to show: the trials table in the asked format, the seed and
    frontier tables (text format) as (title, rows), and the plots written."""

    text: str
    tables: list[tuple[str, list[dict[str, Any]]]]
    plots: list[Path]


def report(
    out_dir: str | Path, *, fmt: str = "text", width: int | None = 80, others: Sequence[str | Path] = ()
) -> Report:
    """The trials table of an output folder, with its plots written to `<dir>/plots`; `others`: more
    folders whose timed rows join the frontier."""
    out = Path(out_dir)
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, got {fmt!r}")
    rows, trials = _rows(out)
    if not rows and not trials:
        raise ValueError(f"{out / RESULTS_FILE}: no results yet")
    table = trial_table(out, rows, trials)
    plots = write_report_files(out, [Path(o) for o in others])
    if fmt != "text":
        return Report({"csv": render_csv, "markdown": render_markdown}[fmt](table), [], plots)
    text = f"{out.name}: {len(table.rows)} trial(s)\n\n{render_text(table, width)}\n"
    tables = _seed_tables(rows, trials)
    timed = [r for path in (out, *map(Path, others)) for r in _rows(path)[0] if r.get(SPEEDUP) is not None]
    if timed:
        tables.append(("test top-1 and measured speed-up, mean ± std over seeds", frontier_rows(timed)))
        if differences := method_differences(timed):
            tables.append(("test top-1 differences a - b between methods (pp), Welch 95% CI", differences))
    return Report(text, tables, plots)
