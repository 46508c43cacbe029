"""Report of an output folder: the trials table (`report_table`) and PNG plots (matplotlib, Agg backend).

Plots: top-1 vs sparsity per method/strategy with each group's Pareto frontier (no other point of the
group is both sparser and more accurate), final top-1 vs every knob that varies across trials, and
compute hours per strategy (GPU-hours, or CPU-hours when no trial held a GPU). With several seeds, a
seed table (mean ± std per searched knob and target) is returned and written as markdown.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.frontier import frontier_rows, method_differences, plot_frontier  # noqa: E402
from ovit_ray.orchestration.results.parquet import read_rows  # noqa: E402
from ovit_ray.orchestration.results.schemas import file_kind  # noqa: E402
from ovit_ray.orchestration.results.stats import pairwise_table  # noqa: E402
from ovit_ray.orchestration.results.table import (  # noqa: E402
    as_trial_rows,
    render_csv,
    render_markdown,
    render_text,
    trial_table,
)
from ovit_ray.orchestration.specs.search_space import KNOBS  # noqa: E402

TRIALS_FILE = "trials.parquet"
LOG_KNOBS = {"damp", "lr_max", "lr_min", "num_grads", "block_size"}
Row = Mapping[str, Any]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(sparsity, top1) points that no other point beats on both, by increasing sparsity."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front[::-1]


def _per_trial(rows: Sequence[Row]) -> list[Row]:
    return list({r["trial_id"]: r for r in rows}.values())


def varying_knobs(rows: Sequence[Row]) -> list[str]:
    """Knob columns with more than one value across trials (the searched ones, in effect)."""
    trials = _per_trial(rows)
    return sorted(k for k in KNOBS if len({repr(t.get(k)) for t in trials}) > 1)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_sparsity(rows: Sequence[Row], path: Path) -> Path:
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        groups[f"{r.get('method')} / {r.get('strategy')}"].append((r["achieved_sparsity"], r["top1"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(groups.items()):
        dots = ax.scatter(*zip(*points, strict=True), alpha=0.5, label=label)
        front = pareto_front(points)
        ax.step(*zip(*front, strict=True), where="post", color=dots.get_facecolor()[0], alpha=0.9)
    ax.set(xlabel="sparsity", ylabel="top-1 (val)", title="top-1 vs sparsity (lines: Pareto frontier)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_knob(rows: Sequence[Row], knob: str, path: Path) -> Path:
    trials = _per_trial(rows)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    values = [t.get(knob) for t in trials]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        ax.scatter(numbers, [t["top1_final"] for t in trials])
        if knob in LOG_KNOBS and min(numbers) > 0:
            ax.set_xscale("log")
    else:
        labels = sorted({str(v) for v in values})
        ax.scatter([labels.index(str(v)) for v in values], [t["top1_final"] for t in trials])
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=knob, ylabel="top-1 at the final target", title=f"top-1 vs {knob}")
    return _save(fig, path)


def plot_compute(rows: Sequence[Row], path: Path) -> Path:
    trials = _per_trial(rows)
    unit = "gpu" if any(t.get("trial_gpu_hours") for t in trials) else "cpu"
    hours: dict[str, float] = defaultdict(float)
    for t in trials:
        hours[str(t["strategy"])] += t.get(f"trial_{unit}_hours") or 0.0
    fig, ax = plt.subplots(figsize=(4, 3.5))
    ax.bar(list(hours), list(hours.values()))
    ax.set(ylabel=f"{unit.upper()}-hours (all trials)", title=f"{unit.upper()}-hours per strategy")
    return _save(fig, path)


def _mean_std(values: Sequence[float], scale: float = 1.0) -> str:
    """'mean ± std' (sample std); a lone value is printed as it is: one seed has no spread."""
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _sort_key(value: Any) -> tuple[int, float | str]:
    """Numbers in numeric order (16 < 64 < 256), then everything else by text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    return 1, str(value)


def seed_summary(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (strategy, method, searched knobs, target): the ablation tables.

    Why group by the varying knobs: a grid over (B, seed) is an ablation of B repeated per seed,
    so every knob that varies except the seed names one table row per target.
    """
    knobs = [k for k in varying_knobs(rows) if k not in ("seed", "method", "strategy")]
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in rows:
        key = (r.get("strategy"), r.get("method"), *(r.get(k) for k in knobs), r["target_sparsity"])
        groups[key].append(r)
    unit = "gpu" if any(r.get("gpu_hours") for r in rows) else "cpu"
    table = []
    for key, members in sorted(groups.items(), key=lambda item: tuple(_sort_key(v) for v in item[0])):
        line: dict[str, Any] = {
            "strategy": key[0],
            "method": key[1],
            **dict(zip(knobs, key[2:-1], strict=True)),
            "target_sparsity": key[-1],
            "seeds": len({m.get("seed") for m in members}),
        }
        line["top1 (%)"] = _mean_std([m["top1"] for m in members], 100)
        line["achieved_sparsity"] = _mean_std([m["achieved_sparsity"] for m in members], 100)
        line["epochs so far"] = _mean_std([m["epochs"] for m in members])
        flops = [m["flops_reduction"] for m in members if m.get("flops_reduction") is not None]
        line["FLOP reduction (x)"] = _mean_std(flops) if flops else "-"
        line[f"{unit.upper()}-hours x1000 so far"] = _mean_std(
            [m.get(f"{unit}_hours") or 0.0 for m in members], 1000
        )
        table.append(line)
    return table


def repeats_seeds(rows: Sequence[Row]) -> bool:
    """Does any (knobs, target) point have results for more than one seed? Only then is a seed table news."""
    return any(line["seeds"] > 1 for line in seed_summary(rows))


def seed_differences(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Test top-1 differences between every two settings per target, Welch 95% CI (stats.pairwise_table)."""
    knobs = [k for k in varying_knobs(rows) if k not in ("seed", "method", "strategy")]
    return pairwise_table(rows, ["strategy", "method", *knobs])


def _markdown(table: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(line[c]) for c in columns) + " |" for line in table]


def write_seed_summary(rows: Sequence[Row], path: Path) -> Path:
    """The seed table and the pairwise differences as markdown, pasteable into BENCHMARKS.md."""
    lines = _markdown(seed_summary(rows))
    differences = seed_differences(rows)
    if differences:
        lines += ["", "Differences a - b of test top-1 (percentage points), Welch 95% CI; * = excludes 0", ""]
        lines += _markdown(differences)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_report_files(rows: Sequence[Row], out_dir: str | Path) -> list[Path]:
    """All report plots under `out_dir`, and the seed table when seeds repeat; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_sparsity(rows, out / "top1_vs_sparsity.png"),
        plot_compute(rows, out / "compute_per_strategy.png"),
    ]
    paths += [plot_knob(rows, k, out / f"top1_vs_{k}.png") for k in varying_knobs(rows)]
    if repeats_seeds(rows):
        paths.append(write_seed_summary(rows, out / "seed_summary.md"))
    return paths


FORMATS = ("text", "csv", "markdown")


@dataclass(frozen=True)
class Report:
    """What `report` found, for the caller to show: the trials table rendered in the asked format, the
    seed tables (text format, seeds repeated) as (title, rows), and the plots written."""

    text: str
    tables: list[tuple[str, list[dict[str, Any]]]]
    plots: list[Path]


def report(out_dir: str | Path, *, fmt: str = "text", width: int | None = 80) -> Report:
    """The trials table of a `sweep`, `train` or `compare-strategies` output folder, with its plots
    written to `<dir>/plots`. The text format adds the seed tables when seeds repeat."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory not found: {out_dir}")
    if fmt not in FORMATS:
        raise ValueError(f"format: one of {', '.join(FORMATS)}, got {fmt!r}")
    if (out_dir / RESULTS_FILE).is_file() and file_kind(
        pq.read_schema(out_dir / RESULTS_FILE)
    ) == "structured_results":
        return _structured_report(out_dir, fmt)
    rows = as_trial_rows(read_rows(out_dir / RESULTS_FILE))
    trials = read_rows(out_dir / TRIALS_FILE) if (out_dir / TRIALS_FILE).exists() else []
    if not rows:
        raise ValueError(f"{out_dir / RESULTS_FILE}: no finished trials yet")
    table = trial_table(out_dir, rows, trials)
    tables: list[tuple[str, list[dict[str, Any]]]] = []
    if fmt == "csv":
        text = render_csv(table)
    elif fmt == "markdown":
        text = render_markdown(table)
    else:
        text = f"{out_dir.name}: {len(table.rows)} trial(s)\n\n{render_text(table, width)}\n"
        if repeats_seeds(rows):
            tables.append(("mean ± std over seeds", seed_summary(rows)))
            if differences := seed_differences(rows):
                tables.append(
                    ("test top-1 differences a - b (pp), Welch 95% CI, * = excludes 0", differences)
                )
    return Report(text, tables, write_report_files(rows, out_dir / "plots"))


def _structured_report(out_dir: Path, fmt: str) -> Report:
    """Structured pruning results: per method and budget over seeds, the method differences, the frontier."""
    rows = read_rows(out_dir / RESULTS_FILE)
    if not rows:
        raise ValueError(f"{out_dir / RESULTS_FILE}: no rows yet")
    summary, differences = frontier_rows(rows), method_differences(rows)
    plots = [plot_frontier(rows, out_dir / "plots" / "frontier.png")]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
        return Report(buffer.getvalue(), [], plots)
    if fmt == "markdown":
        return Report("\n".join(_markdown(summary)) + "\n", [], plots)
    tables = [("test top-1 and measured speed-up, mean ± std over seeds", summary)]
    if differences:
        tables.append(("test top-1 differences a - b (pp), Welch 95% CI, * = excludes 0", differences))
    return Report(f"{out_dir.name}: {len(rows)} structured-pruning row(s)\n", tables, plots)
