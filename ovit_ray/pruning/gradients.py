"""Collecting m masked mini-batch gradients into per-tensor block Fisher sums."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from rich.progress import Progress
from torch import nn

from ovit_ray.pruning.masks import MaskSet
from ovit_ray.tensor_math.blocks import num_blocks, to_blocks
from ovit_ray.tensor_math.fisher import accumulate_outer

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Below this many parameters a forward/backward is a chain of tiny ops: intra-op threads gain little, and on a
# shared or oversubscribed machine they cost 10-20x (measured on the digits preset, BENCHMARKS.md, issue 14).
SMALL_MODEL_PARAMS = 2_000_000
# A flush of 64 gradients already runs the batched product near GEMM speed; a larger buffer only adds fresh
# pages to fault in (384x384 layer, m=256, float32, 2 threads: 256 per flush 0.142 / 0.198 s at B=64 / 192,
# 64 per flush 0.096 / 0.161 s; BENCHMARKS.md, issue 14).
MAX_GRADS_PER_FLUSH = 64


def grads_per_flush(total_weights: int, num_grads: int, dtype: torch.dtype, buffer_bytes: int) -> int:
    """Gradients the buffer holds: as many as `buffer_bytes` allows (each flush is a pass over all sums), at
    most MAX_GRADS_PER_FLUSH and num_grads, at least one."""
    fit = buffer_bytes // (dtype.itemsize * max(1, total_weights))
    return max(1, min(num_grads, MAX_GRADS_PER_FLUSH, fit))


class FisherSums:
    """Un-normalised block sums S = sum_k g_k g_k^T per tensor, fed a few gradients at a time.

    Gradients wait in a small buffer of `buffer_grads` rows and are folded in with one batched matrix
    product per flush, so the m gradients never sit in memory together. `finish()` frees the buffer once
    the sums are complete: planning needs that memory (1 GiB of DeiT-Small's peak at B=192).
    """

    def __init__(
        self,
        shapes: Mapping[str, int],
        block_size: int,
        buffer_grads: int,
        device: torch.device,
        dtype: torch.dtype = torch.float64,
    ):
        self.block_size = block_size
        self.count = 0
        self.sums = {
            name: torch.zeros(
                num_blocks(numel, block_size), block_size, block_size, device=device, dtype=dtype
            )
            for name, numel in shapes.items()
        }
        self._numels, self._buffer_grads = dict(shapes), buffer_grads
        self._buffer: dict[str, torch.Tensor] = {}  # allocated by the first `add`, freed by `finish`
        self._filled = 0

    def add(
        self, grads: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor | None] | None = None
    ) -> None:
        """Append one gradient per tensor; times `masks` (flat, in the sums' dtype; None = all kept) if given."""
        if not self._buffer:
            self._buffer = {
                name: self.sums[name].new_empty(self._buffer_grads, numel)
                for name, numel in self._numels.items()
            }
        for name, grad in grads.items():
            row = self._buffer[name][self._filled]
            row.copy_(
                grad.reshape(-1)
            )  # one vectorised cast; a mixed-dtype multiply into `row` is several x slower
            mask = None if masks is None else masks[name]
            if mask is not None:
                row.mul_(mask)
        self._filled += 1
        self.count += 1
        if self._filled == self._buffer_grads:
            self.flush()

    def reduce(
        self, sum_tensor_: Callable[[torch.Tensor], None], sum_values: Callable[[list[float]], list[float]]
    ) -> None:
        """Turn each worker's sums of its share of the gradients into the sums over all workers."""
        self.finish()
        for sums in self.sums.values():
            sum_tensor_(sums)
        self.count = int(sum_values([self.count])[0])

    def flush(self) -> None:
        if self._filled:
            for name, buffer in self._buffer.items():
                accumulate_outer(self.sums[name], to_blocks(buffer[: self._filled], self.block_size))
            self._filled = 0

    def finish(self) -> None:
        """Fold what is buffered and free the buffer (a later `add` allocates it again)."""
        self.flush()
        self._buffer = {}


def endless(batches: Iterable) -> Iterator:
    """Re-iterate `batches` (e.g. a shuffling DataLoader) for as long as the caller needs."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("data: the gradient data loader yielded no batches")


def collect_fisher(
    model: nn.Module,
    params: Mapping[str, nn.Parameter],
    masks: MaskSet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    num_grads: int,
    block_size: int,
    loss_fn: LossFn = nn.functional.cross_entropy,
    dtype: torch.dtype = torch.float64,
    buffer_bytes: int = 2**30,
    progress: bool = False,
) -> FisherSums:
    """Accumulate `num_grads` gradients of the mean mini-batch loss, each multiplied by the mask.

    The model runs in eval mode (no dropout noise in the curvature estimate); its training mode is restored and
    gradients are cleared afterwards. Masking the gradient decouples pruned weights from the rest.
    The sums are kept in `dtype`: float64 keeps lambda meaningful next to large gradient products, float32
    halves the memory (d * B * 4 bytes) for large models. Every flush of the gradient buffer is one pass
    over all sums, so the buffer (`buffer_bytes`) holds as many gradients as memory allows, up to
    MAX_GRADS_PER_FLUSH.
    Per batch only what the Fisher needs is done: weight gradients of `params` alone (other parameters are
    frozen for the duration), the mask multiplied in place in the buffer (skipped where nothing is pruned), masks moved to the
    device once; small models run with one intra-op thread (SMALL_MODEL_PARAMS). All of it is restored.
    """
    device = next(iter(params.values())).device
    total = sum(p.numel() for p in params.values())
    buffer_grads = grads_per_flush(total, num_grads, dtype, buffer_bytes)
    sums = FisherSums({n: p.numel() for n, p in params.items()}, block_size, buffer_grads, device, dtype)
    # moved and converted once, not per batch; a fully kept tensor needs no multiply at all
    flat_masks = {n: None if bool(masks[n].all()) else masks[n].to(device, dtype).reshape(-1) for n in params}
    was_training = model.training
    model.eval()
    stream = endless(batches)
    with (
        _only_these_need_grad(model, params),
        _threads_for(model),
        Progress(disable=not progress, transient=True) as bar,
    ):
        task = bar.add_task(f"collecting {num_grads} gradients", total=num_grads)
        for _ in range(num_grads):
            inputs, targets = next(stream)
            for p in params.values():
                p.grad = None
            loss_fn(
                model(inputs.to(device, non_blocking=True)), targets.to(device, non_blocking=True)
            ).backward()
            grads = {n: p.grad for n, p in params.items() if p.grad is not None}
            if len(grads) < len(params):  # a parameter the loss does not depend on has no Fisher
                raise ValueError(f"no gradient reaches {sorted(params.keys() - grads.keys())[:3]}")
            sums.add(grads, flat_masks)
            bar.advance(task)
    sums.finish()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return sums


@contextlib.contextmanager
def _only_these_need_grad(model: nn.Module, params: Mapping[str, nn.Parameter]) -> Iterator[None]:
    """Backward computes weight gradients only for `params` (patch embedding, norms, head are skipped)."""
    wanted = {id(p) for p in params.values()}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in wanted]
    for p in others:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in others:
            p.requires_grad_(True)


@contextlib.contextmanager
def _threads_for(model: nn.Module) -> Iterator[None]:
    """One intra-op thread for small models (see SMALL_MODEL_PARAMS), restored afterwards."""
    before = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
