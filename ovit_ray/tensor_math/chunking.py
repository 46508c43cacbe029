"""How many Fisher blocks one elimination chunk holds, derived from B, the dtype and the cache size.

The delayed-downdate elimination touches, per step, the current panel of downdates (panel x B per block)
and a handful of length-B vectors per block (weights, diagonal, scores, the formed column); H itself is
streamed only once per panel by a batched matrix product. A chunk is sized so that per-step working set
fills a share of the last-level cache: larger chunks amortise the fixed cost of each batched operation,
smaller ones keep the per-step passes in cache. The 1/8 share was measured (benchmarks/bench_pruner_speed.py
--elimination) on a 2-core AMD EPYC with a 32 MiB L3 shared with other processes. The CPU's compiled
elimination works one block at a time, so there the chunk only batches the Cholesky inverse and splits the
work between threads; the same size serves.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import torch

_FALLBACK_CACHE_BYTES = 32 * 2**20
_CACHE_SHARE = 8  # the chunk's per-step working set gets 1/8 of the last-level cache
_VECTORS_PER_BLOCK = 8  # length-B vectors live per block and step, besides the panel
_DEVICE_CHUNK_BYTES = 2**30  # accelerators: one wide batch per GiB of H


def runs_compiled(tensor: torch.Tensor, compiled: bool | None) -> bool:
    """Whether the compiled per-block loops run (`compiled`, by default on the CPU); accelerators take the
    batched torch forms."""
    return tensor.device.type == "cpu" if compiled is None else compiled


@functools.cache
def last_level_cache_bytes() -> int:
    """Largest CPU cache listed in Linux sysfs (e.g. '32768K'); 32 MiB where it cannot be read."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=_FALLBACK_CACHE_BYTES)


def elimination_rows(block: int, dtype: torch.dtype, device: torch.device, panel: int) -> int:
    """Blocks per elimination chunk for block size B, this dtype and panel width, on this device."""
    itemsize = dtype.itemsize
    if device.type != "cpu":
        return max(1, _DEVICE_CHUNK_BYTES // (block * block * itemsize))
    budget = last_level_cache_bytes() // _CACHE_SHARE
    return max(1, budget // (block * (panel + _VECTORS_PER_BLOCK) * itemsize))


def even_chunks(total: int, rows: int, workers: int = 1) -> list[slice]:
    """Slices covering range(total) with at most `rows` each, as equal as possible, in a multiple of `workers`
    pieces (when there are enough rows) so that parallel workers finish together."""
    if total <= 0:
        return []
    pieces = -(-total // max(1, rows))
    if workers > 1:
        pieces = min(total, -(-pieces // workers) * workers)
    size, extra = divmod(total, pieces)
    bounds = itertools.accumulate((size + (i < extra) for i in range(pieces)), initial=0)
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]
