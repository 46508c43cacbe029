"""Statistics of the ablation tables: mean ± std over seeds and Welch 95% intervals of differences.

Pure functions over numbers and result rows (no I/O), so the report, the benchmarks and the tests
share one definition. Why Welch: the compared settings need not have equal variances, and with 3-5
seeds a t interval is honest about how little a handful of runs says; two groups with no spread at
all give a zero-width interval at their difference.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float  # sample std (n - 1); 0 for a single value
    n: int

    def text(self, scale: float = 1.0) -> str:
        """'mean ± std' (a lone value alone: one seed has no spread)."""
        if self.n == 1:
            return f"{self.mean * scale:.2f}"
        return f"{self.mean * scale:.2f} ± {self.std * scale:.2f}"


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its confidence interval [low, high]."""

    diff: float
    low: float
    high: float
    df: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, scale: float = 1.0) -> str:
        mark = " *" if self.excludes_zero else ""
        return f"{self.diff * scale:+.2f} [{self.low * scale:+.2f}, {self.high * scale:+.2f}]{mark}"


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Summary(statistics.fmean(values), std, len(values))


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Difference | None:
    """Welch t interval of mean(a) - mean(b); None when either side has fewer than 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = summarize(a), summarize(b)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    diff = sa.mean - sb.mean
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(diff, diff, diff, math.inf)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    return Difference(diff, diff - half, diff + half, df)


def _label(keys: Sequence[str], values: Sequence[Any], vary: set[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True) if k in vary) or "-"


def pairwise_table(
    rows: Sequence[Mapping[str, Any]],
    group_keys: Sequence[str],
    *,
    within: str = "target",
    value: str = "top1",
    scale: float = 100.0,
) -> list[dict[str, Any]]:
    """Every pair of settings (`group_keys` values) at each `within` value: n, means and the difference
    a - b with its Welch 95% interval, marked `*` when the interval excludes 0. Pairs need >= 2 values
    (seeds) on both sides; settings are taken in first-seen order."""
    groups: dict[Any, dict[tuple[Any, ...], list[float]]] = defaultdict(dict)
    for r in rows:
        if r.get(value) is not None:
            groups[r.get(within)].setdefault(tuple(r.get(k) for k in group_keys), []).append(float(r[value]))
    table = []
    for point in sorted(groups):
        settings = groups[point]
        vary = {k for i, k in enumerate(group_keys) if len({s[i] for s in settings}) > 1}
        for a, b in itertools.combinations(settings, 2):
            d = welch_difference(settings[a], settings[b])
            if d is None:
                continue
            table.append(
                {
                    within: point,
                    "a": _label(group_keys, a, vary),
                    "b": _label(group_keys, b, vary),
                    "n (a, b)": f"{len(settings[a])}, {len(settings[b])}",
                    f"{value} a": summarize(settings[a]).text(scale),
                    f"{value} b": summarize(settings[b]).text(scale),
                    f"a - b, {LEVEL:.0%} CI": d.text(scale),
                    "excludes 0": d.excludes_zero,
                }
            )
    return table
