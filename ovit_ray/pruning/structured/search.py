"""The mask search under a MAC budget given as a ratio of the dense model's MACs (OPTIN §2.2, as in PTF):
rank all heads globally by importance and, separately, all neurons; for every k keep the top-k heads and
spend what is left of the budget on neurons in rank order; keep the k whose kept units sum to the most
importance among those that spend the budget to within one neuron (group). Layers may end with no heads or
no neurons (`shrink` handles them).

Spending the budget is our addition to OPTIN's rule (which takes the most important k outright): when a
method values heads little per MAC, the most important k keeps every neuron and leaves up to a head's MACs
unspent, and methods compared at one budget then differ in MACs too (issue 25: the raw-norm baseline got
0.866 for 0.9). A k whose neurons stop short of the budget always leaves less than one neuron (group) unspent,
and such a k exists unless one head costs more than all the model's neurons together, so in any ViT every
method lands within one neuron (group) below the budget (it never goes over).

Costs come from `VitCosts` at the given per-block token counts, so a unit in a block that sees fewer tokens
is cheaper. The result reports requested and achieved MACs.

`select_units` is the enumeration on its own, for any cost given per block as the cumulative cost of keeping
its first 0, 1, ... units (MACs here, a measured latency table in `latency`). With `round_to` > 1 a block's
neurons are taken in groups of `round_to` (its most important ones first), so kept MLP widths are multiples
of `round_to` (tensor cores want multiples of 8 or 32); a block whose width is no multiple keeps all of its
neurons when it keeps its last, smaller group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .costs import VitCosts, Widths
from .units import UnitMasks

__all__ = ["MAX_TOKEN_SHARE", "ROUNDINGS", "SearchResult", "search_flops", "select_units"]

ROUNDINGS = (1, 8, 32)  # the MLP width multiples a search may ask for
MAX_TOKEN_SHARE = 0.85  # OPTIN's τ configuration takes 70-85% of the reduction from tokens


@dataclass(frozen=True)
class SearchResult:
    """The kept units, their widths (with the token schedule, `widths.merged`) and what they cost against
    what was asked; `token_saving` is the part of the MAC reduction that merging tokens makes at dense widths."""

    masks: UnitMasks
    widths: Widths
    requested_macs: float
    achieved_macs: int
    dense_macs: int
    importance: float  # summed importance of the kept heads and neurons
    token_saving: int = 0

    @property
    def requested_ratio(self) -> float:
        return self.requested_macs / self.dense_macs

    @property
    def achieved_ratio(self) -> float:
        return self.achieved_macs / self.dense_macs

    @property
    def token_share(self) -> float:
        """The share of the achieved MAC reduction that merging tokens makes (0 when nothing was saved)."""
        saved = self.dense_macs - self.achieved_macs
        return self.token_saving / saved if saved > 0 else 0.0


def _ranked(
    scores: Sequence[torch.Tensor], cumulative: Sequence[torch.Tensor], group: int
) -> tuple[list[tuple[int, torch.Tensor]], torch.Tensor, torch.Tensor]:
    """Groups of `group` units, each block's most important first, in decreasing summed importance over all
    blocks (ties: lower block, then the block's earlier group, first): each group's block and unit indices,
    and the cumulative cost and importance of keeping the first 0, 1, ... groups."""
    groups: list[tuple[int, torch.Tensor]] = []
    values, costs = [], []
    for layer, (s, cost) in enumerate(zip(scores, cumulative, strict=True)):
        value = s.detach().double().cpu()
        order = torch.sort(-value, stable=True).indices
        for start in range(0, len(order), group):
            members = order[start : start + group]
            groups.append((layer, members))
            values.append(value[members].sum())
            costs.append(cost[start + len(members)] - cost[start])
    value = torch.stack(values) if values else torch.zeros(0, dtype=torch.float64)
    cost = torch.stack(costs).double() if costs else torch.zeros(0, dtype=torch.float64)
    order = torch.sort(-value, stable=True).indices
    zero = torch.zeros(1, dtype=torch.float64)
    return (
        [groups[i] for i in order.tolist()],
        torch.cat([zero, cost[order].cumsum(0)]),
        torch.cat([zero, value[order].cumsum(0)]),
    )


def _keep(scores: Sequence[torch.Tensor], groups: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    rows = [torch.zeros(len(s), dtype=torch.bool) for s in scores]
    for block, members in groups:
        rows[block][members] = True
    return tuple(rows)


def select_units(
    heads: Sequence[torch.Tensor],
    neurons: Sequence[torch.Tensor],
    head_costs: Sequence[torch.Tensor],
    neuron_costs: Sequence[torch.Tensor],
    spend: float,
    round_to: int = 1,
) -> tuple[UnitMasks, float]:
    """The heads-then-neurons enumeration: the masks with the most summed importance whose cost, the sum over
    blocks of `head_costs[l][kept heads] + neuron_costs[l][kept neurons]` (each table starts at 0 and
    neuron tables never decrease), stays within `spend` and, where some k allows it, comes within the
    dearest neuron group of it; with that importance."""
    if round_to not in ROUNDINGS:
        raise ValueError(f"round_to must be one of {ROUNDINGS}, got {round_to}")
    h_groups, h_cost, h_value = _ranked(heads, head_costs, 1)
    n_groups, n_cost, n_value = _ranked(neurons, neuron_costs, round_to)
    if bool((n_cost.diff() < 0).any()):
        raise ValueError("a neuron cost table decreases")
    left = spend - h_cost
    kept_neurons = torch.searchsorted(n_cost, left.clamp(min=0), right=True) - 1
    total = torch.where(
        left >= 0, h_value + n_value[kept_neurons], torch.tensor(-torch.inf, dtype=torch.float64)
    )
    dearest = float(n_cost.diff().max()) if len(n_cost) > 1 else 0.0
    spent = (left >= 0) & (left - n_cost[kept_neurons] < dearest)
    if bool(spent.any()):
        total = torch.where(spent, total, torch.tensor(-torch.inf, dtype=torch.float64))
    k = int(torch.argmax(total))  # the first k of the largest summed importance
    n = int(kept_neurons[k])
    if not bool(torch.isfinite(total[k])):
        raise ValueError("not even the smallest model fits the budget")
    return UnitMasks(_keep(heads, h_groups[:k]), _keep(neurons, n_groups[:n])), float(total[k])


def _mac_tables(costs: VitCosts, widths: Widths) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Per block, the cumulative MACs of its first 0..H heads and 0..h neurons at `widths`' tokens and merges
    (heads and neurons are taken from `widths`), and the MACs of the model with no unit kept."""
    head_tables, neuron_tables = [], []
    merged = widths.merged or (0,) * len(widths.heads)
    for h, m, n, r in zip(widths.heads, widths.neurons, widths.tokens, merged, strict=True):
        heads = [costs.block_macs(k, 0, n, r) for k in range(h + 1)]  # a block without heads matches on d
        head_tables.append(torch.tensor(heads, dtype=torch.float64) - heads[0])
        neuron_tables.append(torch.arange(m + 1, dtype=torch.float64) * costs.neuron_macs(n - r))
    empty = Widths((0,) * len(widths.heads), (0,) * len(widths.heads), widths.tokens, widths.merged)
    return head_tables, neuron_tables, costs.macs(empty)


def _token_schedule(costs: VitCosts, dense: Widths, saving: float) -> tuple[int, ...]:
    """The constant merge r per block (capped by `merged_tokens`) whose MAC saving on the dense widths is the
    largest that does not exceed `saving` (ties: the smaller r); all zeros when none saves anything."""
    dense_macs = costs.macs(dense)
    best, best_saving = 0, 0
    for r in range(1, (dense.tokens[0] - costs.prefix_tokens) // 2 + 1):
        merged = costs.merged_widths(dense.heads, dense.neurons, (r,) * len(dense.heads))
        gain = dense_macs - costs.macs(merged)
        if best_saving < gain <= saving:
            best, best_saving = r, gain
    return (best,) * len(dense.heads)


def search_flops(
    heads: Sequence[torch.Tensor],
    neurons: Sequence[torch.Tensor],
    costs: VitCosts,
    flops_ratio: float,
    tokens: Sequence[int] | None = None,
    round_to: int = 1,
    token_share: float = 0.0,
) -> SearchResult:
    """Keep the heads and neurons (importance per block, higher = keep) that fit `flops_ratio` of the dense
    MACs at `tokens` per block (the model's own counts when None) with the most summed importance.

    `round_to` (1, 8 or 32): kept MLP widths are multiples of it. `token_share` (0 to 0.85): about that share
    of the MAC reduction comes from merging tokens (`tokens.merge_tokens`), through one r for every block (the
    largest whose saving on the dense widths stays within the share, so token counts never increase); the
    rest comes from heads and neurons, costed at the merged token counts. The schedule is `widths.merged`."""
    if not 0 < flops_ratio <= 1:
        raise ValueError(f"flops_ratio must be in (0, 1], got {flops_ratio}")
    if not 0 <= token_share <= MAX_TOKEN_SHARE:
        raise ValueError(f"token_share must be in [0, {MAX_TOKEN_SHARE}], got {token_share}")
    if token_share and tokens is not None:
        raise ValueError("token_share merges from the model's own token counts: leave tokens out")
    widths = tuple(map(len, heads)), tuple(map(len, neurons))
    dense = costs.with_widths(*widths, tokens)
    dense_macs = costs.macs(dense)
    requested = flops_ratio * dense_macs
    if token_share:
        schedule = _token_schedule(costs, dense, token_share * (dense_macs - requested))
        dense = costs.merged_widths(*widths, schedule)
    head_tables, neuron_tables, empty = _mac_tables(costs, dense)
    spend = int(requested) - empty  # MACs the heads and neurons may use
    if spend < 0:
        raise ValueError(f"flops_ratio {flops_ratio} leaves less than the cost of a model without units")
    masks, importance = select_units(heads, neurons, head_tables, neuron_tables, spend, round_to)
    kept = Widths(*masks.kept(), dense.tokens, dense.merged)
    saving = dense_macs - costs.macs(dense)
    return SearchResult(masks, kept, requested, costs.macs(kept), dense_macs, importance, saving)
