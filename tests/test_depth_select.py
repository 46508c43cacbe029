"""Depth pruning's selection (issue 16): per-type rankings, count budgets and target speed-ups."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny_vits import tiny_vit

from ovit_ray.pruning.depth import DepthCosts, DepthScores, counts_for_speedup, select

INF = float("inf")


def _scores() -> DepthScores:
    """Block 1's attention and block 2's activation are gone already; ties in both types."""
    return DepthScores(
        attention={"cosine": torch.tensor([0.3, INF, 0.1, 0.1], dtype=torch.float64)},
        activation={"cosine": torch.tensor([0.2, 0.5, INF, 0.0], dtype=torch.float64)},
    )


def test_select_takes_the_lowest_scores_per_type_with_ties_to_the_lower_block() -> None:
    scores = _scores()
    plan = select(scores, "cosine", 2, 2)
    assert plan.drop_attention == (2, 3) and plan.linearise == (3, 0)
    assert select(scores, "cosine", 3, 3).drop_attention == (2, 3, 0)  # never the removed block 1
    assert select(scores, "cosine", 0, 1) == select(scores, "cosine", 0, 1)
    with pytest.raises(ValueError, match="4 attention removals asked, 3 candidates"):
        select(scores, "cosine", 4, 0)
    with pytest.raises(ValueError, match="no 'taylor' scores"):
        select(scores, "taylor", 1, 1)


def test_a_target_speedup_becomes_the_fewest_removals_that_reach_it() -> None:
    costs = DepthCosts.of(tiny_vit(random_norms=True, depth=4))
    scores = _scores()
    plans = {pair: select(scores, "cosine", *pair) for pair in itertools.product(range(4), range(4))}
    speedup = {pair: costs.speedup(p.drop_attention, p.linearise) for pair, p in plans.items()}
    assert max(speedup.values()) > 1.4
    for target in (1.0, 1.05, 1.2, 1.4):
        a, m = counts_for_speedup(scores, "cosine", costs, target)
        reaching = [pair for pair, s in speedup.items() if s >= target]
        assert speedup[a, m] >= target and a + m == min(x + y for x, y in reaching)
        fixed = counts_for_speedup(scores, "cosine", costs, target, attention=1)[1]
        assert speedup[1, fixed] >= target and (fixed == 0 or speedup[1, fixed - 1] < target)
    with pytest.raises(ValueError, match="out of reach: at most"):
        counts_for_speedup(scores, "cosine", costs, 10.0)
    with pytest.raises(ValueError, match="out of reach"):
        counts_for_speedup(scores, "cosine", costs, 1.2, attention=0, activation=0)
