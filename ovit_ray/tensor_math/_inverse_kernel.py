"""Inverse of symmetric positive-definite Fisher blocks: LAPACK's Cholesky inverse (potrf, then potri) from
SciPy's OpenBLAS, called once per block inside one compiled loop (CPU), for `fisher.invert_spd`.

Why not torch's batched call: torch's CPU LAPACK is MKL, which on this AMD machine ran potrf + potri 1.3-2.2x
slower per block than OpenBLAS on one thread, and 1.5-2.1x slower as the Pruner runs them
(benchmarks/bench_inverse.py, BENCHMARKS.md, issue 14). Why a compiled loop: it calls LAPACK through SciPy's
exported function pointers without the GIL and without a Python call per block, so `pruning.threads` runs
chunks at once. Why not our own loops: an earlier hand-written Cholesky, triangular inverse and X^T X (the
unblocked algorithms) took 0.94-1.26x OpenBLAS's time at B <= 128 and 1.3-1.4x at B = 192 and 256.

Blocks are row-major, so a row-major lower triangle is LAPACK's column-major upper one ("U"). Compiled with
numba on first use (cached on disk). Loading this module sets OpenBLAS (SciPy's and NumPy's) to one thread per
caller; torch's own threads are untouched.
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address
from threadpoolctl import ThreadpoolController

__all__ = ["invert_spd_blocks"]


def _lapack(name: str) -> Any:  # a numba ExternalFunction, callable from compiled code only
    """SciPy's LAPACK routine `name` (Fortran convention: every argument by pointer), linked by symbol name
    rather than held as a pointer, so numba can cache the compiled loop on disk."""
    symbol = f"ovit_ray_{name}"
    llvmlite.binding.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_lapack", name))
    return types.ExternalFunction(symbol, types.void(*[types.voidptr] * 5))


_spotrf, _spotri = _lapack("spotrf"), _lapack("spotri")
_dpotrf, _dpotri = _lapack("dpotrf"), _lapack("dpotri")
# The Pruner runs chunks on its own threads (`pruning.threads`); OpenBLAS's thread pool, entered from two
# chunk threads at once, made this inverse 2-3x slower than one OpenBLAS thread per caller (bench_inverse.py).
ThreadpoolController().select(internal_api="openblas").limit(limits=1)
_UPPER = np.array([ord("U")], np.uint8)  # column-major upper = row-major lower


@njit(nogil=True, cache=True)
def invert_spd_blocks(sums: np.ndarray, scale: float, damp: float, out: np.ndarray) -> int:
    """out[b] = (scale * sums[b] + damp * I)^-1 for every block, in out's dtype (only sums' lower triangle is
    read). Dampening while copying into `out` saves the separate pass and buffer of `fisher_from_sums`.
    Returns -1, or the first block whose Cholesky factorisation meets a pivot that is not positive (that
    block's out is undefined)."""
    n, block = sums.shape[0], sums.shape[1]
    size = np.array([block], np.int32)
    info = np.zeros(1, np.int32)
    for b in range(n):
        inverse = out[b]
        for i in range(block):
            for j in range(i + 1):
                inverse[i, j] = sums[b, i, j] * scale
            inverse[i, i] += damp
        if out.itemsize == 4:
            _spotrf(_UPPER.ctypes, size.ctypes, inverse.ctypes, size.ctypes, info.ctypes)
            if info[0] == 0:
                _spotri(_UPPER.ctypes, size.ctypes, inverse.ctypes, size.ctypes, info.ctypes)
        else:
            _dpotrf(_UPPER.ctypes, size.ctypes, inverse.ctypes, size.ctypes, info.ctypes)
            if info[0] == 0:
                _dpotri(_UPPER.ctypes, size.ctypes, inverse.ctypes, size.ctypes, info.ctypes)
        positive = info[0] == 0
        for i in range(block):  # NaN passes OpenBLAS's pivot test; an SPD inverse's diagonal is positive
            positive = positive and inverse[i, i] > 0
            for j in range(i):
                inverse[j, i] = inverse[i, j]
        if not positive:
            return b
    return -1
