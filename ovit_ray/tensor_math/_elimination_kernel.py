"""The greedy elimination as one compiled loop per Fisher block (CPU), for `elimination.greedy_eliminate`.

Why a kernel: in eager PyTorch every step is ~20 batched operations over all blocks of a chunk, and at
B <= 128 their dispatch costs more than their flops. Here one block's inverse Fisher stays in L1/L2 for
all its steps, and each step is a handful of loops over the *surviving* positions only: an eliminated
position is dropped by moving the last survivor into its slot, so step t updates (B - t)^2 / 2 entries
(the lower triangle of a symmetric H) instead of B^2. That is 1/6 of the eager form's flops.

Arithmetic per step is the eager form's (scores, pivot, u = H[:, p] / sqrt(H_pp), weight, diagonal and
rank-1 updates), so results equal `greedy_eliminate`'s torch path to round-off; ties go to the first
original position, as torch's argmin does. Compiled with numba on first use (cached on disk); `nogil`
lets `pruning.threads` run several chunks at once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["eliminate_blocks"]


@njit(nogil=True, cache=True, fastmath={"contract"})
def eliminate_blocks(
    weights: np.ndarray,
    inv_fisher: np.ndarray,
    steps: int,
    update_weights: bool,
    group_size: int,
    group_quota: int,
    floor: float,
    out_weights: np.ndarray,
    order: np.ndarray,
    scores: np.ndarray,
    coeffs: np.ndarray,
    downdates: np.ndarray,
) -> None:
    """Eliminate `steps` positions of every block; writes order, scores (2 x loss increment), coeffs,
    out_weights and, when downdates has blocks, every u_t in original positions. inv_fisher is scratch.
    group_quota > 0: at most that many eliminations per group of group_size consecutive positions. `floor`
    bounds the diagonal from below (elimination's _TINY, passed so the two forms cannot drift apart)."""
    n, block = weights.shape
    keep = downdates.shape[0] > 0
    tiny = weights.dtype.type(floor)
    pos = np.empty(block, np.int64)  # slot -> original position of the survivors, slots 0..size-1
    w = np.empty(block, weights.dtype)
    diag = np.empty(block, weights.dtype)
    u = np.empty(block, weights.dtype)
    score = np.empty(block, weights.dtype)
    eliminated_in_group = np.zeros(max(1, block // max(1, group_size)), np.int64)
    for b in range(n):
        h = inv_fisher[b]  # only the lower triangle (i >= j) of the survivors' slots is kept current
        for s in range(block):
            pos[s] = s
            w[s] = weights[b, s]
            diag[s] = h[s, s]
        if keep:
            downdates[b] = 0
        eliminated_in_group[:] = 0
        size = block
        for t in range(steps):
            for s in range(size):
                d = max(diag[s], tiny)
                diag[s] = d
                score[s] = w[s] * w[s] / d
            if group_quota > 0:
                for s in range(size):
                    if eliminated_in_group[pos[s] // group_size] >= group_quota:
                        score[s] = np.inf
            p = 0
            for s in range(1, size):
                if score[s] < score[p] or (score[s] == score[p] and pos[s] < pos[p]):
                    p = s
            order[b, t] = pos[p]
            scores[b, t] = score[p]
            inv_sqrt = 1 / math.sqrt(diag[p])
            for s in range(p):
                u[s] = h[p, s] * inv_sqrt
            for s in range(p, size):
                u[s] = h[s, p] * inv_sqrt
            coeff = w[p] * inv_sqrt
            coeffs[b, t] = coeff
            if keep:
                for s in range(size):
                    downdates[b, t, pos[s]] = u[s]
            if update_weights:
                for s in range(size):
                    w[s] -= u[s] * coeff
            for s in range(size):
                diag[s] -= u[s] * u[s]
            if group_quota > 0:
                eliminated_in_group[pos[p] // group_size] += 1
            size -= 1  # drop slot p: the last survivor moves into it
            if p != size:
                for j in range(p):
                    h[p, j] = h[size, j]
                for j in range(p + 1, size):
                    h[j, p] = h[size, j]
                h[p, p] = h[size, size]
                pos[p], w[p], diag[p], u[p] = pos[size], w[size], diag[size], u[size]
            for i in range(size):
                u_i = u[i]
                row = h[i]
                for j in range(i + 1):
                    row[j] -= u_i * u[j]
        out_weights[b] = 0
        for s in range(size):
            out_weights[b, pos[s]] = w[s]
