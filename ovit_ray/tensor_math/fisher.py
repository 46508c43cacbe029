"""Empirical block Fisher: F = lambda * I + (1/m) * sum_k g_k g_k^T for every block.

Gradients arrive in small groups and are folded into the un-normalised sum S = sum_k g_k g_k^T with one
batched matrix product per group (`accumulate_outer`), so the m gradients are never held at once and
the work runs at matrix-multiply speed instead of m memory-bound rank-1 updates. Keeping S
un-normalised lets distributed workers all-reduce their partial sums before dividing by the global m.
"""

from __future__ import annotations

import torch

from ovit_ray.tensor_math.chunking import runs_compiled


def accumulate_outer(sums: torch.Tensor, grads: torch.Tensor) -> None:
    """sums (n, B, B) += sum over k of g_k g_k^T per block, for grads (k, n, B). In place."""
    per_block = grads.permute(1, 0, 2)  # (n, k, B)
    torch.baddbmm(sums, per_block.transpose(1, 2), per_block, out=sums)


def fisher_from_sums(sums: torch.Tensor, count: int, damp: float, dtype: torch.dtype) -> torch.Tensor:
    """Dampened Fisher blocks lambda * I + sums / count, in `dtype` (fp64 recommended: 1/lambda ~ 1e7)."""
    fisher = sums.to(dtype) / _checked(count)
    fisher.diagonal(dim1=-2, dim2=-1).add_(damp)
    return fisher


def _checked(count: int) -> int:
    if count <= 0:
        raise ValueError(f"num_grads must be > 0 to build a Fisher, got {count}")
    return count


def inverse_fisher(
    sums: torch.Tensor, count: int, damp: float, dtype: torch.dtype, *, compiled: bool | None = None
) -> torch.Tensor:
    """`invert_spd(fisher_from_sums(sums, count, damp, dtype))`, with the dampening folded into the compiled
    inverse's copy of each block on the CPU (one pass and one chunk-sized buffer fewer)."""
    if runs_compiled(sums, compiled):
        return _compiled_inverse(sums, 1 / _checked(count), damp, dtype)
    return invert_spd(fisher_from_sums(sums, count, damp, dtype), compiled=False)


def invert_spd(matrices: torch.Tensor, *, compiled: bool | None = None) -> torch.Tensor:
    """Batched inverse of symmetric positive-definite blocks through Cholesky (stable, ~3x cheaper than LU).

    `compiled` (default: on the CPU) runs LAPACK's potrf + potri from SciPy's OpenBLAS once per block in a
    compiled loop (`_inverse_kernel`); otherwise torch's batched Cholesky inverse (MKL on the CPU). As the
    Pruner runs them (chunks on two threads), OpenBLAS was 1.5-2.1x faster at B = 64..256 on this machine
    (benchmarks/bench_inverse.py, BENCHMARKS.md). A recursive Schur-complement inverse built on batched
    matrix products ran 1.2-1.9x faster than MKL but is not kept: forming S = D - C A^-1 C^T from an explicit
    A^-1 lost positive definiteness on real float32 Fisher blocks at lambda = 1e-8 that Cholesky factors
    (benchmarks/bench_precision.py, BENCHMARKS.md).
    """
    if runs_compiled(matrices, compiled):
        return _compiled_inverse(matrices, 1.0, 0.0, matrices.dtype)
    chol, info = torch.linalg.cholesky_ex(matrices)
    failed = (info > 0).nonzero()
    if len(failed):
        raise _not_positive_definite(int(failed[0]))
    return torch.cholesky_inverse(chol)


def _compiled_inverse(sums: torch.Tensor, scale: float, damp: float, dtype: torch.dtype) -> torch.Tensor:
    from ovit_ray.tensor_math._inverse_kernel import invert_spd_blocks

    inverse = torch.empty(sums.shape, dtype=dtype)
    bad = invert_spd_blocks(sums.detach().contiguous().numpy(), scale, damp, inverse.numpy())
    if bad >= 0:
        raise _not_positive_definite(bad)
    return inverse


def _not_positive_definite(block: int) -> ValueError:
    return ValueError(
        f"Fisher block {block} is not positive definite at this precision; increase the dampening "
        f"lambda (damp) or compute in float64"
    )


def sherman_morrison_inverse(grads: torch.Tensor, damp: float) -> torch.Tensor:
    """Reference inverse Fisher built by m sequential rank-1 updates (the published recursion).

    grads: (m, n, B). Returns (n, B, B). Slow by design; used to check `invert_spd(fisher_from_sums(...))`.
    """
    m, n, block = grads.shape
    inv = torch.eye(block, dtype=grads.dtype).expand(n, block, block) / damp
    for g in grads:  # g: (n, B)
        hg = torch.einsum("nij,nj->ni", inv, g)
        denom = m + torch.einsum("ni,ni->n", g, hg)
        inv = inv - hg.unsqueeze(2) * hg.unsqueeze(1) / denom.view(n, 1, 1)
    return inv
