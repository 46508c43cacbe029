"""Cholesky inverse of the dampened Fisher blocks: the compiled loop over OpenBLAS's potrf + potri (the CPU
default) vs torch's batched call (MKL), as `Pruner.plan` runs them (issue 14).

For a 384x384 layer at each B: dampened Fisher blocks from random gradients (m = 256), inverted in the
Pruner's chunks, `torch.get_num_threads()` chunks at once (`pruning.threads`), the two inverses alternating
on the same inputs; medians of --repeats.

    .venv/bin/python benchmarks/bench_inverse.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import results_file as results
import torch

from ovit_ray.pruning.names import DTYPE_NAMES
from ovit_ray.pruning.settings import dtype_of
from ovit_ray.pruning.threads import chunk_workers, map_chunks
from ovit_ray.tensor_math.chunking import elimination_rows, even_chunks
from ovit_ray.tensor_math.elimination import default_panel
from ovit_ray.tensor_math.fisher import inverse_fisher


def seconds(sums: torch.Tensor, chunks: list[slice], m: int, damp: float, compiled: bool) -> float:
    """Wall time to invert every chunk's dampened Fisher blocks, chunks on worker threads as plan runs them."""
    workers = chunk_workers(sums.device)
    began = time.perf_counter()
    map_chunks(
        lambda s: inverse_fisher(sums[s], m, damp, sums.dtype, compiled=compiled),
        chunks,
        workers,
    )
    return time.perf_counter() - began


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=list(DTYPE_NAMES))
    p.add_argument("-B", "--block-size", nargs="+", type=int, default=[64, 128, 192, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--damp", type=float, default=1e-7)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu, m, weights = torch.device("cpu"), 256, 384 * 384
    lines = [
        "| dtype | B | OpenBLAS, compiled loop (s) | torch / MKL (s) | MKL / OpenBLAS |",
        "|---|---:|---:|---:|---:|",
    ]
    print("\n".join(lines))
    for name in args.dtype:
        dtype = dtype_of(name)
        for block in args.block_size:
            grads = torch.randn(weights // block, block, m, dtype=torch.float64) * 1e-3
            sums = (grads @ grads.transpose(1, 2)).to(dtype)
            rows = elimination_rows(block, dtype, cpu, default_panel(block))
            chunks = even_chunks(len(sums), rows, chunk_workers(cpu))
            inverse_fisher(sums[:1], m, args.damp, dtype)  # compile before the clock
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for compiled in times:
                    times[compiled].append(seconds(sums, chunks, m, args.damp, compiled))
            fast, lapack = statistics.median(times[True]), statistics.median(times[False])
            lines.append(f"| {name} | {block} | {fast:.3f} | {lapack:.3f} | {lapack / fast:.2f}x |")
            print(lines[-1], flush=True)
    threads = torch.get_num_threads()
    setting = f"384x384 layer, m = {m}, lambda = {args.damp:g}, threads: {threads}, medians of {args.repeats}"
    print(f"\n{setting}, torch {torch.__version__}")
    results.write_results(
        "inverse",
        title="Pruner: Cholesky inverse of the Fisher blocks, OpenBLAS loop vs torch/MKL",
        headline=[],
        tables=results.tables_from_markdown("\n".join(lines), setting),
        notes="The compiled loop calls OpenBLAS's potrf + potri per block (the CPU default); torch's batched "
        "call runs MKL; chunks inverted as `Pruner.plan` runs them, the two alternating on the same inputs.",
    )


if __name__ == "__main__":
    main()
