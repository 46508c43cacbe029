"""The greedy elimination as it was before issue 14 (eager batched rank-1 updates), kept verbatim as the
reference that every restructured path is checked against (order, losses and weights to round-off)."""

from __future__ import annotations

import torch

from ovit_ray.tensor_math.elimination import Elimination

_TINY = 1e-30  # floor for diagonal entries that round-off pushes to <= 0 after many downdates


def reference_greedy_eliminate(
    weights: torch.Tensor,
    inv_fisher: torch.Tensor,
    *,
    steps: int | None = None,
    update_weights: bool = True,
    group_size: int | None = None,
    group_quota: int | None = None,
) -> Elimination:
    """oViT elimination: repeatedly remove the weight of least OBS loss and update the rest jointly.

    Step: score_j = w_j^2 / H_jj, p = argmin, loss += score_p / 2, w -= H[:, p] w_p / H_pp,
    H -= H[:, p] H[p, :] / H_pp. `inv_fisher` is overwritten (it becomes the inverse of the surviving
    sub-Fisher); pass a clone to keep it. With `group_size`/`group_quota` (N:M patterns) at most
    `group_quota` weights are eliminated in each group of `group_size` consecutive positions.
    """
    n, block = weights.shape
    if steps is None:
        steps = block if group_size is None else block // group_size * group_quota
    rows = torch.arange(n, device=weights.device)
    w = weights.clone()
    h = inv_fisher
    # Scores need only diag(H); keeping it contiguous and updating it in O(nB) per step is much cheaper
    # than re-reading the strided diagonal. `blocked` is +inf where a weight may no longer be chosen.
    diag = h.diagonal(dim1=1, dim2=2).clone()
    blocked = torch.zeros_like(w)
    groups = (
        None if group_size is None else torch.zeros(n, block // group_size, dtype=torch.long, device=w.device)
    )
    order = torch.empty(n, steps, dtype=torch.long, device=w.device)
    losses = torch.empty(n, steps, dtype=w.dtype, device=w.device)
    cumulative = torch.zeros(n, dtype=w.dtype, device=w.device)
    for t in range(steps):
        scores = w.square().div_(diag.clamp_min_(_TINY)).add_(blocked)
        p = scores.argmin(dim=1)
        h_pp = diag[rows, p]
        cumulative += scores[rows, p] / 2
        order[:, t] = p
        losses[:, t] = cumulative
        h_p = h[rows, p]  # row p == column p (H is symmetric)
        scaled = h_p / h_pp.unsqueeze(1)
        if update_weights:
            w.sub_(h_p * w[rows, p].unsqueeze(1) / h_pp.unsqueeze(1))
        h.addcmul_(h_p.unsqueeze(2), scaled.unsqueeze(1), value=-1)
        diag.sub_(h_p * scaled)
        w[rows, p] = 0
        diag[rows, p] = 1  # any positive value: the +inf in `blocked` already rules p out
        blocked[rows, p] = float("inf")
        if groups is not None:
            g = p // group_size
            groups[rows, g] += 1
            full = groups[rows, g] >= group_quota
            blocked.view(n, -1, group_size)[rows[full], g[full]] = float("inf")
    return Elimination(order=order, losses=losses, weights=w.masked_fill_(blocked.isinf(), 0))
