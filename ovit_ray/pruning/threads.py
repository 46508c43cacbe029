"""Independent chunks of Fisher blocks on the CPU's cores, one chunk per thread.

The CPU's compiled inverse and elimination work one block at a time, and LAPACK's batched Cholesky (apply's
fallback solve) is a loop of small per-block calls: torch's intra-op threads split none of them. Whole chunks
on separate Python threads run them in parallel (torch and the compiled loops release the GIL); two chunks at
once ran the elimination 1.5-1.9x faster than one on 2 cores (bench_pruner_speed.py --elimination --threads 2).
So on the CPU the chunks run `torch.get_num_threads()` (at most `MAX_CHUNK_WORKERS`) at a time with one
intra-op thread each; accelerators take the chunks one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

__all__ = ["MAX_CHUNK_WORKERS", "chunk_workers", "map_chunks"]


# Each chunk in flight holds its Fisher blocks and their inverse (about 130 MiB at B=192 in float64), so large
# CPU nodes run at most this many at once.
MAX_CHUNK_WORKERS = 8


def chunk_workers(device: torch.device) -> int:
    """How many chunks run at once on `device`: torch's thread count on the CPU (capped), else one."""
    return min(torch.get_num_threads(), MAX_CHUNK_WORKERS) if device.type == "cpu" else 1


def map_chunks(fn: Callable[[slice], T], chunks: Sequence[slice], workers: int) -> list[T]:
    """[fn(c) for c in chunks], `workers` at a time; torch runs one intra-op thread meanwhile."""
    if workers <= 1 or len(chunks) <= 1:
        return [fn(c) for c in chunks]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ovit-chunk")
    try:
        return list(pool.map(fn, chunks))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(before)
