"""Report of structured-pruning results (`structured_results` files): test top-1 against the *measured*
speed-up, one curve per method, and per budget the mean ± std over seeds with the differences between
methods (Welch 95% intervals).

A row's label is its structured method, plus the unstructured step that followed it; rows of method "none"
are unstructured pruning alone (e.g. "ovit 0.90"), timed like the rest, so the plot shows what unstructured
sparsity buys in wall time on dense kernels next to what removing heads and neurons buys.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ovit_ray.orchestration.results.stats import pairwise_table, summarize  # noqa: E402

Row = Mapping[str, Any]
SPEEDUP = "speedup_throughput"


def label(row: Row) -> str:
    """What produced the row, one frontier curve each: 'optin', 'optin +ToMe 0.50' (a token share),
    'optin +ovit', 'ovit' for unstructured pruning, 'boundarydpt' (depth pruning) or 'boundarydpt+' (then
    width pruning), marked when its activation stage ran first; else the kind."""
    if row.get("kind") == "depth":
        order = " (activation-first)" if row.get("stage_order") == "activation-first" else ""
        return "boundarydpt" + ("+" if row.get("width_ratio") is not None else "") + order
    if row.get("kind") == "structured":
        latency = " (latency budget)" if row.get("budget_kind") == "latency" else ""
        tokens = f" +ToMe {row['token_share']:.2f}" if row.get("token_share") else ""
        recover = "" if row.get("recover") in (None, "none") else f" +{row['recover']}"
        then = f" +{row['then_method']}" if row.get("then_method") else ""
        return str(row["method"]) + tokens + recover + then + latency
    return str(row.get("method") or row.get("kind"))


def _point(row: Row) -> tuple[float, float, int, int]:
    """The requested target (a MACs or latency ratio, a sparsity; a depth row's width ratio, 1 without),
    the sparsity of a follow-up unstructured step, a depth row's attention and activation counts."""
    if row.get("kind") == "depth":
        budget = float(row.get("width_ratio") or 1.0)
    else:
        budget = float(row["target"]) if row.get("target") is not None else 1.0
    depth = int(row.get("attention") or 0), int(row.get("activation") or 0)
    return budget, float(row.get("then_sparsity") or 0.0), *depth


def _budget_text(ratio: float, sparsity: float, attention: int, activation: int) -> str:
    depth = f" a{attention}v{activation}" if attention or activation else ""
    return f"{ratio:.2f}" + (f" s={sparsity:.2f}" if sparsity else "") + depth


def frontier_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Mean ± std over seeds of test top-1 (%) and measured speed-ups per (label, budget: the requested ratio
    of MACs, or of latency for latency budgets)."""
    groups: dict[tuple[str, tuple[float, float, int, int], float], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(label(r), _point(r), float(r.get("token_share") or 0.0))].append(r)
    table = []
    for (name, point, tokens), members in sorted(groups.items()):

        def stat(key: str, scale: float = 1.0, rows: list[Row] = members) -> str:
            values = [float(m[key]) for m in rows if m.get(key) is not None]
            return summarize(values).text(scale) if values else "-"

        table.append(
            {
                "method": name,
                "budget": _budget_text(*point),
                "tokens": f"{tokens:.2f}",
                "n": len(members),
                "test top-1 (%)": stat("top1", 100),
                "x latency b1": stat("speedup_latency"),
                "x throughput": stat(SPEEDUP),
            }
        )
    return table


def method_differences(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Every two methods at each budget (same MACs ratio and token share): test top-1 a - b with its
    Welch 95% interval, `*` when it excludes 0."""
    keyed = [
        {**r, "label": label(r), "budget": f"{_budget_text(*_point(r))}/t{r.get('token_share') or 0:.2f}"}
        for r in rows
        if r.get("kind") == "structured"
    ]
    return pairwise_table(keyed, ["label"], within="budget")


def plot_frontier(rows: Sequence[Row], path: Path) -> Path:
    """Test top-1 vs measured throughput speed-up, mean and std over seeds, one line per method."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    curves: dict[str, dict[tuple[float, float, int, int], list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get(SPEEDUP) is not None:
            curves[label(r)][_point(r)].append(r)
    for name, points in sorted(curves.items()):
        xs = [summarize([float(m[SPEEDUP]) for m in p]) for p in points.values()]
        ys = [summarize([100 * float(m["top1"]) for m in p]) for p in points.values()]
        order = sorted(range(len(xs)), key=lambda i: xs[i].mean)
        ax.errorbar(
            [xs[i].mean for i in order],
            [ys[i].mean for i in order],
            xerr=[xs[i].std for i in order],
            yerr=[ys[i].std for i in order],
            marker="o",
            capsize=3,
            label=name,
        )
    dense = [100 * float(r["top1_dense"]) for r in rows if r.get("top1_dense") is not None]
    if dense:
        ax.axhline(dense[0], color="grey", linestyle=":", label="dense")
    batch = next((r.get("speed_batch") for r in rows if r.get("speed_batch")), None)
    ax.set_xlabel(f"measured throughput speed-up over dense (batch {batch})")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("accuracy vs measured speed-up")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
