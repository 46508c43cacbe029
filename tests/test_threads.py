"""Chunks on worker threads: order kept, one intra-op thread while they run, errors surface, setting restored."""

import threading

import pytest
import torch

from ovit_ray.pruning.threads import MAX_CHUNK_WORKERS, chunk_workers, map_chunks


def test_map_chunks_keeps_order_runs_on_workers_and_restores_threads():
    before = torch.get_num_threads()
    seen = []

    def work(chunk: slice) -> int:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return chunk.start

    chunks = [slice(i, i + 1) for i in range(7)]
    assert map_chunks(work, chunks, workers=3) == list(range(7))
    assert all(name.startswith("ovit-chunk") and threads == 1 for name, threads in seen)
    assert torch.get_num_threads() == before


def test_map_chunks_raises_the_workers_error_and_restores_threads():
    before = torch.get_num_threads()

    def work(chunk: slice) -> int:
        if chunk.start == 2:
            raise ValueError("Fisher block 2 is not positive definite")
        return chunk.start

    with pytest.raises(ValueError, match="block 2"):
        map_chunks(work, [slice(i, i + 1) for i in range(4)], workers=2)
    assert torch.get_num_threads() == before


def test_one_worker_or_one_chunk_runs_in_the_calling_thread():
    names = []
    map_chunks(lambda c: names.append(threading.current_thread().name), [slice(0, 1)], workers=4)
    map_chunks(lambda c: names.append(threading.current_thread().name), [slice(0, 1), slice(1, 2)], workers=1)
    assert names == [threading.current_thread().name] * 3
    assert chunk_workers(torch.device("meta")) == 1


def test_cpu_workers_follow_torch_threads_up_to_the_cap():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert chunk_workers(torch.device("cpu")) == 3
        torch.set_num_threads(MAX_CHUNK_WORKERS + 4)
        assert chunk_workers(torch.device("cpu")) == MAX_CHUNK_WORKERS
    finally:
        torch.set_num_threads(before)
