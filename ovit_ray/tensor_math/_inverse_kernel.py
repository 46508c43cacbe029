"""Inverse of symmetric positive-definite Fisher blocks as one compiled loop per block (CPU), for
`fisher.invert_spd`.

Why a kernel: LAPACK's batched Cholesky inverse is one library call per block, and at B <= 256 each call's
set-up and blocking cost more than its flops. Here a block is factorised and inverted in one scratch copy
that stays in L1/L2: Cholesky row by row (F = L L^T, dot products of row prefixes), X = L^-1 row by row,
then H = X^T X. These are LAPACK's unblocked algorithms (potrf, trtri, lauum), so the result is as
accurate. On bare blocks, one thread, it ran 1.1-1.8x faster than `torch.cholesky_inverse` at B = 64..256;
as the Pruner runs it, 1.2-1.3x at B <= 128 and level above (BENCHMARKS.md, issue 14), so `invert_spd` uses
it up to B = 128. Dot-product forms of the inverse and the product (contiguous rows only) ran 2-4x slower.
Compiled with numba on first use (cached on disk); `nogil` lets `pruning.threads` run chunks at once.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["invert_spd_blocks"]


@njit(nogil=True, cache=True, fastmath={"contract", "reassoc", "nsz"})
def invert_spd_blocks(fisher: np.ndarray, out: np.ndarray) -> int:
    """out[b] = fisher[b]^-1 for every block (only fisher's lower triangle is read). Returns -1, or the first
    block whose Cholesky factorisation meets a pivot that is not positive (that block's out is undefined)."""
    n, block = fisher.shape[0], fisher.shape[1]
    a = np.empty((block, block), fisher.dtype)  # L, then X = L^-1, lower triangle
    row = np.empty(block, fisher.dtype)
    for b in range(n):
        for i in range(block):
            for j in range(i + 1):
                s = fisher[b, i, j]
                for k in range(j):
                    s -= a[i, k] * a[j, k]
                if i > j:
                    a[i, j] = s / a[j, j]
                elif s > 0:
                    a[i, i] = math.sqrt(s)
                else:
                    return b
        for i in range(block):  # row i of X: -(L[i, :i] @ X[:i, :i]) / L[i, i], from rows already inverted
            row[:i] = 0
            for k in range(i):
                l_ik = a[i, k]
                for j in range(k + 1):
                    row[j] += l_ik * a[k, j]
            inv_diag = 1 / a[i, i]
            for j in range(i):
                a[i, j] = -row[j] * inv_diag
            a[i, i] = inv_diag
        h = out[b]
        h[:, :] = 0
        for k in range(block):  # H = sum over rows k of X of x_k^T x_k, lower triangle
            for i in range(k + 1):
                x_ki = a[k, i]
                h_i = h[i]
                for j in range(i + 1):
                    h_i[j] += x_ki * a[k, j]
        for i in range(block):
            for j in range(i):
                h[j, i] = h[i, j]
    return -1
