"""Per-block second-order elimination: oViT's correlation-aware greedy order and the OBS closed forms.

Shapes: weights (n, B), inverse Fisher H (n, B, B), Fisher F (n, B, B); every block is independent, so
each step below is one batched operation over all n blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_TINY = 1e-30  # floor for diagonal entries that round-off pushes to <= 0 after many downdates


@dataclass(frozen=True)
class Elimination:
    """Greedy elimination of `steps` weights per block.

    order[b, t] is the position eliminated at step t, losses[b, t] the block's cumulative OBS loss after
    that step (non-decreasing in t), weights the block after all steps (with the OBS update if requested).
    """

    order: torch.Tensor
    losses: torch.Tensor
    weights: torch.Tensor


def greedy_eliminate(
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
    groups = None if group_size is None else torch.zeros(n, block // group_size, dtype=torch.long, device=w.device)
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


def obs_update(weights: torch.Tensor, fisher: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Exact joint OBS for a given pruned set S: minimise 1/2 dw^T F dw subject to w_S = 0.

    Survivors R move by F_RR^-1 F_RS w_S, which equals the H-form w - H[:, S] (H_SS)^-1 w_S but needs
    only F, so no inverse has to be kept between planning and applying. Solved as one batched Cholesky
    system with pruned rows/columns replaced by the identity.
    """
    keep = (~pruned).to(weights.dtype)
    w_pruned = weights * pruned.to(weights.dtype)
    rhs = torch.einsum("nij,nj->ni", fisher, w_pruned) * keep
    reduced = fisher * keep.unsqueeze(1) * keep.unsqueeze(2)
    reduced.diagonal(dim1=1, dim2=2).add_(1 - keep)
    shift = torch.cholesky_solve(rhs.unsqueeze(2), torch.linalg.cholesky(reduced)).squeeze(2)
    return (weights + shift) * keep


def obs_loss(weights: torch.Tensor, inv_fisher: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Per-block loss 1/2 w_S^T (H_SS)^-1 w_S of pruning the set S (brute force, for checks)."""
    losses = []
    for w, h, s in zip(weights, inv_fisher, pruned, strict=True):
        w_s = w[s]
        losses.append(0.5 * w_s @ torch.linalg.solve(h[s][:, s], w_s) if len(w_s) else w.new_zeros(()))
    return torch.stack(losses)


def woodfisher_saliency(weights: torch.Tensor, inv_fisher: torch.Tensor) -> torch.Tensor:
    """Independent single-weight OBS saliency w_j^2 / (2 H_jj): ignores correlations between pruned weights."""
    return weights.square() / (2 * inv_fisher.diagonal(dim1=1, dim2=2).clamp_min(_TINY))


def woodfisher_update(weights: torch.Tensor, inv_fisher: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Sum of single-weight OBS updates over the pruned set: w - sum_j H[:, j] w_j / H_jj, then zero S."""
    coeff = weights * pruned.to(weights.dtype) / inv_fisher.diagonal(dim1=1, dim2=2).clamp_min(_TINY)
    return (weights - torch.einsum("nij,nj->ni", inv_fisher, coeff)) * (~pruned).to(weights.dtype)
