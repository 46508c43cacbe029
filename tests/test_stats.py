"""Ablation statistics: mean ± std, Welch intervals, the pairwise table (pure functions)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import ttest_ind

from ovit_ray.orchestration.results.stats import pairwise_table, summarize, welch_difference


def test_summary_is_mean_and_sample_std() -> None:
    s = summarize([0.90, 0.92, 0.94])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.92), pytest.approx(0.02))
    assert s.text(100) == "92.00 ± 2.00" and summarize([0.5]).text(100) == "50.00"
    with pytest.raises(ValueError):
        summarize([])


def test_welch_interval_by_hand_and_against_scipy() -> None:
    d = welch_difference([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    # diff -3, se sqrt(2/3), df 4, t(0.975, 4) = 2.7764
    assert d.diff == -3 and d.df == pytest.approx(4.0)
    assert (d.low, d.high) == (
        pytest.approx(-3 - 2.7764 * math.sqrt(2 / 3), abs=1e-4),
        pytest.approx(-3 + 2.7764 * math.sqrt(2 / 3), abs=1e-4),
    )
    assert d.excludes_zero and d.text().endswith("*")
    a, b = [0.91, 0.95, 0.90, 0.97], [0.93, 0.89, 0.94]
    ref = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    mine = welch_difference(a, b)
    assert (mine.low, mine.high) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert not mine.excludes_zero and not mine.text().endswith("*")


def test_welch_edge_cases() -> None:
    assert welch_difference([1.0], [2.0, 3.0]) is None  # one seed: no interval
    flat = welch_difference([0.5, 0.5, 0.5], [0.4, 0.4])
    assert (flat.low, flat.high) == (pytest.approx(0.1), pytest.approx(0.1)) and flat.excludes_zero
    same = welch_difference([0.5, 0.5], [0.5, 0.5])
    assert same.diff == 0 and not same.excludes_zero


def _row(method: str, seed: int, target: float, top1: float) -> dict:
    return {"method": method, "strategy": "sweep", "seed": seed, "target": target, "top1": top1}


def test_pairwise_table_compares_settings_per_target_and_marks_significant_ones() -> None:
    rows = [
        _row(m, s, t, top)
        for t, tops in (
            (0.5, {"ovit": (0.96, 0.97, 0.95), "ovit-noupdate": (0.95, 0.97, 0.96)}),
            (0.9, {"ovit": (0.90, 0.91, 0.92), "ovit-noupdate": (0.60, 0.65, 0.62)}),
        )
        for m, seeds in tops.items()
        for s, top in enumerate(seeds)
    ]
    table = pairwise_table(rows, ["strategy", "method"])
    assert [(line["target"], line["a"], line["b"]) for line in table] == [
        (0.5, "method=ovit", "method=ovit-noupdate"),
        (0.9, "method=ovit", "method=ovit-noupdate"),
    ]
    assert [line["excludes 0"] for line in table] == [False, True]
    assert table[1]["n (a, b)"] == "3, 3" and table[1]["top1 a"] == "91.00 ± 1.00"
    assert table[1]["a - b, 95% CI"].startswith("+28.67 [") and table[1]["a - b, 95% CI"].endswith("*")
    assert pairwise_table([r for r in rows if r["seed"] == 0], ["method"]) == []  # one seed: no pairs
