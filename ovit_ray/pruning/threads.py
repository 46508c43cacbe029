"""Independent chunks of Fisher blocks on the CPU's cores, one chunk per thread.

Torch's intra-op threads do not help the elimination: its per-step operations are too small to split
(2 threads ran it no faster than 1, bench_pruner_speed.py). Whole chunks on separate Python threads do
(torch releases the GIL inside each operation), so on the CPU the chunks run `torch.get_num_threads()` at
a time with one intra-op thread each; accelerators take the chunks one after another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")

__all__ = ["chunk_workers", "map_chunks"]


def chunk_workers(device: torch.device) -> int:
    """How many chunks run at once on `device`."""
    return torch.get_num_threads() if device.type == "cpu" else 1


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
