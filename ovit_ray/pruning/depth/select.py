"""Which attention sublayers and activations to remove: each type ranked on its own scores (lowest first, ties
to the lower block index), with its own budget, given as counts or as a target analytic speed-up.

A target speed-up becomes counts by taking each ranking's prefix: with one count fixed, the fewest removals
of the other type that reach the target; with neither fixed [ours: BoundaryDPT does not say how it splits],
the pair with the fewest removals in all, then the higher speed-up, then fewer attention drops.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from .costs import DepthCosts
from .scores import DepthScores

__all__ = ["DepthPlan", "counts_for_speedup", "ranking", "select"]


@dataclass(frozen=True)
class DepthPlan:
    """Blocks whose attention is dropped and whose MLP activation is linearised, in ranking order."""

    drop_attention: tuple[int, ...]
    linearise: tuple[int, ...]


def ranking(scores: DepthScores, kind: str, scorer: str) -> list[int]:
    """The blocks with a candidate of `kind`, lowest `scorer` score first; ties go to the lower block index."""
    table = scores.of(kind)
    if scorer not in table:
        raise ValueError(f"no {scorer!r} scores (scored: {', '.join(sorted(table))})")
    values = table[scorer]
    order = torch.argsort(values, stable=True).tolist()
    return [b for b in order if bool(torch.isfinite(values[b]))]


def select(scores: DepthScores, scorer: str, attention: int, activation: int) -> DepthPlan:
    """The `attention` lowest-scored attention sublayers and `activation` lowest-scored activations."""
    plan = []
    for kind, count in (("attention", attention), ("activation", activation)):
        order = ranking(scores, kind, scorer)
        if not 0 <= count <= len(order):
            raise ValueError(f"{count} {kind} removals asked, {len(order)} candidates")
        plan.append(tuple(order[:count]))
    return DepthPlan(*plan)


def counts_for_speedup(
    scores: DepthScores,
    scorer: str,
    costs: DepthCosts,
    target: float,
    attention: int | None = None,
    activation: int | None = None,
) -> tuple[int, int]:
    """(attention, activation) removal counts whose plan reaches `target` analytic speed-up (MACs ratio to
    the scored model), fixing whichever count is given; a ValueError names the best reachable speed-up."""
    if target < 1.0:
        raise ValueError(f"a target speed-up below 1 ({target}) asks for no pruning")
    sizes = [len(ranking(scores, kind, scorer)) for kind in ("attention", "activation")]
    pairs = itertools.product(
        range(sizes[0] + 1) if attention is None else [attention],
        range(sizes[1] + 1) if activation is None else [activation],
    )
    best: tuple[int, float, int, int] | None = None
    reached = 0.0
    for n_attn, n_act in pairs:
        plan = select(scores, scorer, n_attn, n_act)
        speedup = costs.speedup(plan.drop_attention, plan.linearise)
        reached = max(reached, speedup)
        key = (n_attn + n_act, -speedup, n_attn, n_act)
        if speedup >= target and (best is None or key < best):
            best = key
    if best is None:
        raise ValueError(f"a speed-up of {target} is out of reach: at most {reached:.4f} with these counts")
    return best[2], best[3]
