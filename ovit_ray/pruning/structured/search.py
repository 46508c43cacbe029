"""The mask search under a MAC budget given as a ratio of the dense model's MACs (OPTIN §2.2, as in PTF):
rank all heads globally by importance and, separately, all neurons; for every k keep the top-k heads and
spend what is left of the budget on neurons in rank order; keep the k whose kept units sum to the most
importance. Layers may end with no heads or no neurons (`shrink` handles them).

Costs come from `VitCosts` at the given per-block token counts, so a unit in a block that sees fewer tokens
is cheaper. The result reports requested and achieved MACs: the search stops short of the budget by less
than one unit (it never goes over).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .costs import VitCosts, Widths
from .units import UnitMasks

__all__ = ["SearchResult", "search_flops"]


@dataclass(frozen=True)
class SearchResult:
    """The kept units, their widths and what they cost against what was asked."""

    masks: UnitMasks
    widths: Widths
    requested_macs: float
    achieved_macs: int
    dense_macs: int
    importance: float  # summed importance of the kept heads and neurons

    @property
    def requested_ratio(self) -> float:
        return self.requested_macs / self.dense_macs

    @property
    def achieved_ratio(self) -> float:
        return self.achieved_macs / self.dense_macs


def _ranked(scores: Sequence[torch.Tensor], unit_macs: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Units of all blocks in decreasing importance (ties: lower block, then lower index, first): their
    block, index, and the cumulative MACs and importance of keeping the first 0, 1, ... of them."""
    layer = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
    index = torch.cat([torch.arange(len(s)) for s in scores])
    value = torch.cat([s.detach().double().cpu() for s in scores])
    order = torch.sort(-value, stable=True).indices
    macs = torch.tensor(unit_macs, dtype=torch.int64)[layer[order]]
    zero = torch.zeros(1, dtype=torch.float64)
    return (
        layer[order],
        index[order],
        torch.cat([zero.long(), macs.cumsum(0)]),
        torch.cat([zero, value[order].cumsum(0)]),
    )


def _keep(
    scores: Sequence[torch.Tensor], layer: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    rows = [torch.zeros(len(s), dtype=torch.bool) for s in scores]
    for block, unit in zip(layer.tolist(), index.tolist(), strict=True):
        rows[block][unit] = True
    return tuple(rows)


def search_flops(
    heads: Sequence[torch.Tensor],
    neurons: Sequence[torch.Tensor],
    costs: VitCosts,
    flops_ratio: float,
    tokens: Sequence[int] | None = None,
) -> SearchResult:
    """Keep the heads and neurons (importance per block, higher = keep) that fit `flops_ratio` of the dense
    MACs at `tokens` per block (the model's own counts when None) with the most summed importance."""
    if not 0 < flops_ratio <= 1:
        raise ValueError(f"flops_ratio must be in (0, 1], got {flops_ratio}")
    tokens = tuple(tokens) if tokens is not None else costs.widths.tokens
    dense = costs.with_widths(tuple(map(len, heads)), tuple(map(len, neurons)), tokens)
    dense_macs = costs.macs(dense)
    requested = flops_ratio * dense_macs
    spend = int(requested) - costs.fixed_macs  # MACs the blocks may use
    if spend < 0:
        raise ValueError(
            f"flops_ratio {flops_ratio} leaves less than the patch embedding and classifier cost"
        )
    h_layer, h_index, h_macs, h_value = _ranked(heads, [costs.head_macs(n) for n in tokens])
    n_layer, n_index, n_macs, n_value = _ranked(neurons, [costs.neuron_macs(n) for n in tokens])
    left = spend - h_macs
    feasible = left >= 0
    kept_neurons = torch.searchsorted(n_macs, left.clamp(min=0), right=True) - 1
    total = torch.where(
        feasible, h_value + n_value[kept_neurons], torch.tensor(-torch.inf, dtype=torch.float64)
    )
    k = int(torch.argmax(total))  # the first k of the largest summed importance
    n = int(kept_neurons[k])
    masks = UnitMasks(_keep(heads, h_layer[:k], h_index[:k]), _keep(neurons, n_layer[:n], n_index[:n]))
    widths = costs.with_widths(*masks.kept(), tokens)
    return SearchResult(masks, widths, requested, costs.macs(widths), dense_macs, float(total[k]))
