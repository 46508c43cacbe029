"""Per-block second-order elimination: oViT's correlation-aware greedy order and the OBS closed forms.

Shapes: weights (n, B), inverse Fisher H (n, B, B), Fisher F (n, B, B); every block is independent, so
each step below is one batched operation over all n blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovit_ray.tensor_math.chunking import runs_compiled

_TINY = 1e-30  # floor for diagonal entries that round-off pushes to <= 0 after many downdates
_SAME_ORDER_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


@dataclass(frozen=True)
class Elimination:
    """Greedy elimination of `steps` weights per block.

    order[b, t] is the position eliminated at step t, losses[b, t] the block's cumulative OBS loss after
    that step (non-decreasing in t), weights the block after all steps (with the OBS update if requested).
    When a `downdates` buffer is passed, downdates[b, t] (u_t, with H_{t+1} = H_t - u_t u_t^T) and coeffs[b, t]
    (w_t[p_t] / sqrt(H_t[p_t, p_t])) give the weights after any prefix of k steps as w_0 - sum_{t<k} coeffs_t u_t
    (`prefix_weights`), so applying a sparsity needs no second factorisation.
    """

    order: torch.Tensor
    losses: torch.Tensor
    weights: torch.Tensor
    downdates: torch.Tensor | None = None
    coeffs: torch.Tensor | None = None


def greedy_eliminate(
    weights: torch.Tensor,
    inv_fisher: torch.Tensor,
    *,
    steps: int | None = None,
    update_weights: bool = True,
    group_size: int | None = None,
    group_quota: int | None = None,
    panel: int | None = None,
    downdates: torch.Tensor | None = None,
    compiled: bool | None = None,
) -> Elimination:
    """oViT elimination: repeatedly remove the weight of least OBS loss and update the rest jointly.

    Step: score_j = w_j^2 / H_jj, p = argmin, loss += score_p / 2, u = H[:, p] / sqrt(H_pp),
    w -= u * w_p / sqrt(H_pp), H -= u u^T. The downdate of H is delayed ("left-looking" within a panel):
    column p is formed from H at the panel start minus the panel's earlier downdates, and every `panel`
    steps the panel is folded into H with one batched matrix product (rank-`panel` update at GEMM speed
    instead of `panel` memory-bound rank-1 passes). panel=1 is the eager rank-1 form, panel >= steps the
    fully lazy form H_t = H_0 - U U^T. `inv_fisher` is scratch space (overwritten). `downdates`, an
    (n, steps, B) buffer, keeps every u_t for `prefix_weights` (the panel then lives in it). With
    `group_size`/`group_quota` (N:M patterns) at most `group_quota` weights are eliminated in each group of
    `group_size` consecutive positions.

    `compiled` (default: on the CPU) runs the same steps as one compiled loop per block over the survivors
    only (`_elimination_kernel`); the batched panel form below is the accelerator path.
    """
    n, block = weights.shape
    if (group_size is None) != (group_quota is None):
        raise ValueError("group_size and group_quota come together (an N:M pattern) or not at all")
    if steps is None:
        steps = elimination_steps(block, group_size, group_quota)
    if runs_compiled(weights, compiled):
        return _compiled_eliminate(
            weights, inv_fisher, steps, update_weights, group_size or 1, group_quota or 0, downdates
        )
    panel = default_panel(block) if panel is None else max(1, min(panel, steps))
    device, dtype = weights.device, weights.dtype
    base = torch.arange(n, device=device) * block  # flat index of each block's first position
    w = weights.clone()
    h = _row_major(inv_fisher)
    h_rows = h.view(n * block, block)  # row rows*B + p of this view is column p of block `rows` (H symmetric)
    diag = h.diagonal(dim1=1, dim2=2).clone()
    w_flat, diag_flat = w.view(-1), diag.view(-1)
    # An eliminated weight is set to +inf, so its score is +inf whatever its diagonal: it is never chosen
    # again, with no mask to add per step. Only N:M quotas need a mask, for survivors of full groups.
    quota = (
        None
        if group_size is None or group_quota is None
        else _Quota(group_size, group_quota, base.new_zeros(n, block // group_size), torch.zeros_like(w))
    )
    scores = torch.empty_like(w)
    scores_flat, score_bits = scores.view(-1), scores.view(_SAME_ORDER_INT[dtype])
    # per step: the position eliminated, its score (its loss increment x 2) and its coefficient w_p / sqrt(H_pp)
    orders: list[torch.Tensor] = []
    picked: list[torch.Tensor] = []
    coeffs: list[torch.Tensor] = []
    keep = downdates is not None
    u_all = downdates if downdates is not None else torch.empty(n, panel, block, dtype=dtype, device=device)
    start = 0  # first step of the current panel
    for t in range(steps):
        first = start if keep else 0
        j = t - start  # downdates in the current panel not yet folded into H
        u_panel = u_all[:, first : first + j]
        torch.mul(w, w, out=scores).div_(diag.clamp_min_(_TINY))
        if quota is not None:
            scores.add_(quota.blocked)
        # Scores are >= 0 (or +inf), whose IEEE bit patterns order like integers; the integer argmin is
        # about twice as fast as the float one and breaks ties the same way (first position).
        p = score_bits.argmin(dim=1)
        flat = base + p
        orders.append(p)
        picked.append(scores_flat.index_select(0, flat))
        col = h_rows.index_select(0, flat)
        if j:
            u_p = u_panel.gather(2, p.view(n, 1, 1).expand(n, j, 1)).transpose(1, 2)  # (n, 1, j)
            col.unsqueeze(1).baddbmm_(u_p, u_panel, alpha=-1)
        inv_sqrt = diag_flat.index_select(0, flat).rsqrt_().unsqueeze_(1)
        u = u_all[:, first + j]
        torch.mul(col, inv_sqrt, out=u)
        c = w_flat.index_select(0, flat).unsqueeze_(1).mul_(inv_sqrt)
        coeffs.append(c)
        if update_weights:
            w.addcmul_(u, c, value=-1)
        diag.addcmul_(u, u, value=-1)
        w_flat.index_fill_(0, flat, float("inf"))
        if quota is not None:
            quota.count(p, base)
        if j + 1 == panel and t + 1 < steps:
            u_done = u_all[:, first : first + panel]
            h.baddbmm_(u_done.transpose(1, 2), u_done, alpha=-1)
            start = t + 1
    order = _by_block(orders, base)
    return Elimination(
        order=order,
        losses=_by_block(picked, w).cumsum_(dim=1).div_(2),
        weights=w.scatter_(1, order, 0),  # the +inf of eliminated weights become 0; survivors stay
        downdates=downdates,
        coeffs=_by_block(coeffs, w) if keep else None,
    )


def _compiled_eliminate(
    weights: torch.Tensor,
    inv_fisher: torch.Tensor,
    steps: int,
    update_weights: bool,
    group_size: int,
    group_quota: int,
    downdates: torch.Tensor | None,
) -> Elimination:
    """greedy_eliminate through the compiled per-block loop (CPU tensors; numba is imported on first use)."""
    from ovit_ray.tensor_math._elimination_kernel import eliminate_blocks

    n, block = weights.shape
    out = torch.empty_like(weights)
    order = torch.empty(n, steps, dtype=torch.int64)
    scores, coeffs = weights.new_empty(n, steps), weights.new_empty(n, steps)
    kept = downdates if downdates is not None else weights.new_empty(0, steps, block)
    eliminate_blocks(
        weights.detach().contiguous().numpy(),
        _row_major(inv_fisher.detach()).numpy(),
        steps,
        update_weights,
        group_size,
        group_quota,
        _TINY,
        out.numpy(),
        order.numpy(),
        scores.numpy(),
        coeffs.numpy(),
        kept.detach().numpy(),
    )
    return Elimination(
        order=order,
        losses=scores.cumsum_(dim=1).div_(2),
        weights=out,
        downdates=downdates,
        coeffs=coeffs if downdates is not None else None,
    )


def _row_major(symmetric: torch.Tensor) -> torch.Tensor:
    """The batch of symmetric matrices as a C-contiguous tensor without a copy where possible: LAPACK's
    inverse comes back column-major, and the transpose of a symmetric matrix is itself."""
    flipped = symmetric.transpose(1, 2)
    return flipped if flipped.is_contiguous() and not symmetric.is_contiguous() else symmetric.contiguous()


@dataclass(frozen=True)
class _Quota:
    """N:M state of an elimination: at most `limit` eliminations in each group of `size` positions."""

    size: int
    limit: int
    counts: torch.Tensor  # (n, B / size): eliminations so far per group
    blocked: torch.Tensor  # (n, B): +inf on the survivors of full groups

    def count(self, picked: torch.Tensor, base: torch.Tensor) -> None:
        """Count this step's picks (one position per block) and block the rest of every group that is full."""
        group = picked // self.size
        flat = base // self.size + group
        full = (
            self.counts.view(-1).index_add_(0, flat, torch.ones_like(group)).index_select(0, flat)
            >= self.limit
        )
        self.blocked.view(len(picked), -1, self.size)[full.nonzero().squeeze(1), group[full]] = float("inf")


def _by_block(per_step: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """(n, steps) from one (n,) or (n, 1) tensor per step (of `like`'s dtype and device)."""
    if not per_step:
        return like.new_empty(like.shape[0], 0)
    return torch.stack([v.view(-1) for v in per_step], dim=1)


def elimination_steps(block: int, group_size: int | None, group_quota: int | None) -> int:
    """Steps a full elimination takes: every position, or with an N:M quota the quota of every group."""
    return block if group_size is None or group_quota is None else block // group_size * group_quota


def default_panel(block: int) -> int:
    """Panel width of the delayed downdate: B/8, at least 16 (on a quiet 2-core EPYC, one thread: 16 was best
    or within noise for B <= 192, 32 ran B=256 1.2-1.3x faster than 16; wider panels make the per-step column
    correction dearer, narrower ones the panel's matrix product less efficient)."""
    return min(block, max(16, block // 8))


def prefix_weights(
    weights: torch.Tensor, downdates: torch.Tensor, coeffs: torch.Tensor, kept_steps: torch.Tensor
) -> torch.Tensor:
    """Each block's weights after its first kept_steps[b] eliminations: w_0 - sum_{t<k_b} coeffs_t u_t.

    One pass over the stored downdates instead of a Cholesky solve; eliminated entries come out as
    round-off, callers zero them with the mask.
    """
    steps = int(kept_steps.max()) if kept_steps.numel() else 0
    if steps == 0:
        return weights.clone()
    live = torch.arange(steps, device=weights.device) < kept_steps.unsqueeze(1)
    scaled = coeffs[:, :steps].mul(live).unsqueeze(1)
    return torch.baddbmm(weights.unsqueeze(1), scaled, downdates[:, :steps], alpha=-1).squeeze(1)


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
