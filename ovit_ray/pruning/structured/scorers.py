"""Structured pruning methods as plug-ins: each one only scores heads and MLP neurons; the budget search,
the shrink and the measurement are shared, so two methods differ in their score and nothing else.

- `optin`: OPTIN's trajectory importance (`scoring`), label-free, forward passes only.
- `group-l1`, `group-l2`, `taylor`, `random`: the standard baselines (`baselines`). `taylor` is the one that
  needs labels (`uses_labels`): the calibration batch brings them with its images, the others ignore them.

The names live torch-free in `ovit_ray.pruning.names.STRUCTURED_METHODS` (what `--help` lists); every name
there has a scorer here, checked at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ovit_ray.pruning.names import STRUCTURED_METHODS

from .baselines import Scores, group_norm_scores, random_scores, taylor_scores
from .scoring import OptinSettings, UnitScores, optin_scores

__all__ = ["StructuredScorer", "get_scorer"]

# (model, images, settings, labels, progress) -> scores
ScoreFn = Callable[[nn.Module, torch.Tensor, OptinSettings, torch.Tensor | None, bool | None], UnitScores]


@dataclass(frozen=True)
class StructuredScorer:
    """Importance of every head and neuron of a dense ViT (higher = keep) on a calibration batch."""

    name: str
    uses_labels: bool
    _score: ScoreFn

    def score(
        self,
        model: nn.Module,
        images: torch.Tensor,
        settings: OptinSettings,
        *,
        labels: torch.Tensor | None = None,
        progress: bool | None = None,
    ) -> UnitScores:
        """Scores per block, deterministic for `settings.seed`; `labels` (one per image) for a scorer that
        `uses_labels`, ignored by the others. `progress`: a bar with ETA on stderr where scoring takes long
        (None: when stderr is a terminal)."""
        return self._score(model, images, settings, labels, progress)


def _baseline(scores: Scores) -> UnitScores:
    return UnitScores(heads=scores[0], neurons=scores[1], md={}, kd={}, kd_scale=1.0)


def _taylor(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None) -> UnitScores:
    if labels is None:
        raise ValueError("taylor scores on a labelled calibration batch: pass the images' labels")
    return _baseline(taylor_scores(model, images, labels))


_SCORERS = {
    scorer.name: scorer
    for scorer in (
        StructuredScorer("optin", False, lambda m, x, s, _, bar: optin_scores(m, x, s, progress=bar)),
        StructuredScorer("group-l1", False, lambda m, *_: _baseline(group_norm_scores(m, 1))),
        StructuredScorer("group-l2", False, lambda m, *_: _baseline(group_norm_scores(m, 2))),
        StructuredScorer("taylor", True, lambda m, x, _, y, __: _taylor(m, x, y)),
        StructuredScorer("random", False, lambda m, _, s, *__: _baseline(random_scores(m, s.seed))),
    )
}
if tuple(_SCORERS) != STRUCTURED_METHODS:
    raise ImportError(f"structured scorers {tuple(_SCORERS)} differ from the names {STRUCTURED_METHODS}")


def get_scorer(name: str) -> StructuredScorer:
    """The scorer registered as `name`, or a ValueError listing the names."""
    if name not in _SCORERS:
        raise ValueError(f"unknown structured method {name!r}; choose from {', '.join(_SCORERS)}")
    return _SCORERS[name]
