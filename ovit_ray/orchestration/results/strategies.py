"""The sweep-vs-independent comparison of a gradual folder: per target, test top-1 and epochs of each strategy,
then the hours of each, in the training loop and allocated (start-up included), in 80 columns.

Sweep epochs at a target are what its one run had spent when that target's window closed; an independent
run's are its whole run. Hours are totals over each strategy's trials (allocated: what a cluster bills).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ovit_ray.orchestration.results import RESULTS_FILE, TRIALS_FILE
from ovit_ray.orchestration.results.parquet import read_rows

__all__ = ["strategy_table"]


def strategy_table(out: Path) -> str:
    rows, trials = read_rows(out / RESULTS_FILE), read_rows(out / TRIALS_FILE)
    strategies = sorted({r["strategy"] for r in rows})
    cells: dict[float, dict[str, tuple[list[float], list[int]]]] = defaultdict(
        lambda: defaultdict(lambda: ([], []))
    )
    for r in rows:
        top1, epochs = cells[r["target"]][r["strategy"]]
        top1.append(100 * r["top1"])
        epochs.append(int(r["epochs_trained"] or 0))
    head = f"{'target':>6}  " + "  ".join(f"{'top-1 ' + s[:5]:>12}  {'ep ' + s[:5]:>8}" for s in strategies)
    lines = ["sweep vs independent, per target (mean over seeds)", head, "-" * len(head)]
    for target in sorted(cells):
        parts = []
        for s in strategies:
            top1, epochs = cells[target][s]
            parts.append(
                f"{sum(top1) / len(top1):>12.1f}  {sum(epochs) / len(epochs):>8.1f}"
                if top1
                else f"{'-':>12}  {'-':>8}"
            )
        lines.append(f"{target:>6g}  " + "  ".join(parts))
    unit = "gpu" if any(t.get("allocated_gpu_hours") for t in trials) else "cpu"
    lines.append("")
    for s in strategies:
        own = [t for t in trials if t.get("strategy") == s]
        loop = sum(t.get(f"{unit}_hours") or 0.0 for t in own)
        held = sum(t.get(f"allocated_{unit}_hours") or 0.0 for t in own)
        spent = sum(t.get("epochs_total") or 0 for t in own)
        lines.append(
            f"{s:<11} {spent:>4} epochs, {unit.upper()}-hours {held:.4f} allocated ({loop:.4f} in the loop)"
        )
    return "\n".join(lines)
