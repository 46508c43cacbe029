"""A latency budget instead of a MAC budget (PTF, Kwon et al. 2022): MACs do not say how long a sublayer
takes, especially at small widths where a kernel costs about the same whatever its size. So we time each
block's attention with 1..H heads and MLP with sampled neuron counts on the current device, fit each as PTF
does (a constant up to a threshold width, then a slope), and run the same heads-then-neurons enumeration as
the MAC search (`search.select_units`) with those per-width costs.

Blocks of the same widths at the same token count are timed once. Everything outside the attention and MLP
sublayers (patch embedding, norms, residuals, head) is the table's `fixed` time: the dense model's time less
its sublayers' fitted times. Estimated times are what the search reports; speed-ups are measured elsewhere.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .costs import VitCosts, Widths
from .search import select_units
from .shrink import shrink_block
from .units import UnitMasks, block_widths, check_vit

__all__ = ["LatencyResult", "LatencyTable", "PiecewiseLinear", "measure_latency", "search_latency"]


@dataclass(frozen=True)
class PiecewiseLinear:
    """Seconds of a sublayer that keeps k units: 0 for k = 0, `constant` up to `threshold`, then rising by
    `slope` per unit; with the timed (k, seconds) samples it was fitted to."""

    threshold: int
    constant: float
    slope: float
    samples: tuple[tuple[int, float], ...]

    def __call__(self, k: int) -> float:
        return 0.0 if k <= 0 else self.constant + self.slope * max(0, k - self.threshold)

    def cumulative(self, width: int) -> torch.Tensor:
        """Seconds of keeping 0, 1, ..., `width` units (what `select_units` takes)."""
        return torch.tensor([self(k) for k in range(width + 1)], dtype=torch.float64)

    @classmethod
    def fit(cls, samples: Sequence[tuple[int, float]]) -> PiecewiseLinear:
        """Least squares over every sampled width as the threshold (ties: the smaller one): the constant is
        the mean time up to it, the slope (never negative) fits the rest."""
        points = sorted(samples)
        if not points or points[0][0] < 1:
            raise ValueError(f"need samples at widths >= 1, got {points}")
        best: tuple[float, int, float, float] | None = None
        for i, (threshold, _) in enumerate(points):
            constant = statistics.fmean(t for _, t in points[: i + 1])
            rest = points[i + 1 :]
            spread = sum((k - threshold) ** 2 for k, _ in rest)
            rise = sum((k - threshold) * (t - constant) for k, t in rest)
            slope = max(0.0, rise / spread) if spread else 0.0
            fitted = cls(threshold, constant, slope, ())
            error = sum((fitted(k) - t) ** 2 for k, t in points)
            if best is None or error < best[0]:
                best = (error, threshold, constant, slope)
        assert best is not None
        return cls(best[1], best[2], best[3], tuple(points))


@dataclass(frozen=True)
class LatencyTable:
    """Per block, fitted seconds of its attention by heads and its MLP by neurons, for one batch size,
    token count per block, dtype and device; `heads`/`neurons` are the widths it was measured up to."""

    attention: tuple[PiecewiseLinear, ...]
    mlp: tuple[PiecewiseLinear, ...]
    fixed: float
    heads: tuple[int, ...]
    neurons: tuple[int, ...]
    tokens: tuple[int, ...]
    batch_size: int
    dtype: str
    device: str

    def seconds(self, heads: Sequence[int], neurons: Sequence[int]) -> float:
        """Estimated seconds of one batch through the model with these kept units per block."""
        blocks = zip(self.attention, self.mlp, heads, neurons, strict=True)
        return self.fixed + sum(a(h) + m(n) for a, m, h, n in blocks)

    def dense_seconds(self) -> float:
        return self.seconds(self.heads, self.neurons)


@dataclass(frozen=True)
class _Timing:
    batch_size: int
    dtype: torch.dtype
    device: torch.device
    warmup: int
    runs: int

    def median(self, run: Callable[[], object]) -> float:
        """Median seconds of `runs` calls after `warmup` untimed ones."""
        for _ in range(self.warmup):
            run()
        times = []
        for _ in range(self.runs):
            self._sync()
            start = time.perf_counter()
            run()
            self._sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _widths(width: int, samples: int) -> list[int]:
    """Up to `samples` widths from 1 to `width`, evenly spread, both ends included."""
    count = min(samples, width)
    return sorted({round(1 + i * (width - 1) / max(count - 1, 1)) for i in range(count)})


def _fit_sublayer(
    block: nn.Module, kind: str, widths: tuple[int, int], x: torch.Tensor, samples: int, timing: _Timing
) -> PiecewiseLinear:
    """Time one block's attention (kind "attn") or MLP ("mlp") on `x`, shrunk to each sampled width, and
    fit it."""
    width = widths[0] if kind == "attn" else widths[1]
    if width == 0:
        return PiecewiseLinear(0, 0.0, 0.0, ())
    timed = []
    for k in _widths(width, samples):
        small = copy.deepcopy(block)
        heads = torch.arange(widths[0]) < (k if kind == "attn" else widths[0])
        neurons = torch.arange(widths[1]) < (k if kind == "mlp" else widths[1])
        shrink_block(small, heads, neurons)
        sublayer = small.get_submodule(kind).to(device=timing.device, dtype=timing.dtype).eval()
        timed.append((k, timing.median(partial(sublayer, x))))
    return PiecewiseLinear.fit(timed)


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    batch_size: int = 1,
    tokens: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    warmup: int = 10,
    runs: int = 30,
    samples: int = 12,
) -> LatencyTable:
    """Time the model's attention and MLP sublayers at up to `samples` widths each (median of `runs` after
    `warmup`) on `device` (the model's own when None) with `tokens` per block (the model's own when None)."""
    vit = check_vit(model)
    where = torch.device(device) if device is not None else next(vit.parameters()).device
    timing = _Timing(batch_size, dtype, where, warmup, runs)
    counts = tuple(tokens) if tokens is not None else VitCosts.of(vit).widths.tokens
    heads, neurons = block_widths(vit)
    fits: dict[tuple[str, int, int, int], PiecewiseLinear] = {}
    attention: list[PiecewiseLinear] = []
    mlp: list[PiecewiseLinear] = []
    for index, (n, h, m) in enumerate(zip(counts, heads, neurons, strict=True)):
        for kind, out in (("attn", attention), ("mlp", mlp)):
            key = (kind, n, h, m)  # blocks of the same widths and tokens are timed once
            if key not in fits:
                x = torch.randn(batch_size, n, int(vit.embed_dim), device=where, dtype=dtype)
                fits[key] = _fit_sublayer(vit.blocks[index], kind, (h, m), x, samples, timing)
            out.append(fits[key])
    dense = copy.deepcopy(vit).to(device=where, dtype=dtype).eval()
    images = torch.randn(batch_size, 3, *dense.patch_embed.img_size, device=where, dtype=dtype)
    sublayers = sum(a(h) + f(m) for a, f, h, m in zip(attention, mlp, heads, neurons, strict=True))
    return LatencyTable(
        attention=tuple(attention),
        mlp=tuple(mlp),
        fixed=max(0.0, timing.median(lambda: dense(images)) - sublayers),
        heads=heads,
        neurons=neurons,
        tokens=counts,
        batch_size=batch_size,
        dtype=str(dtype).removeprefix("torch."),
        device=str(where),
    )


@dataclass(frozen=True)
class LatencyResult:
    """The kept units and their widths, with the requested, achieved and dense seconds per batch as the
    table estimates them."""

    masks: UnitMasks
    widths: Widths
    requested_seconds: float
    achieved_seconds: float
    dense_seconds: float
    importance: float

    @property
    def requested_ratio(self) -> float:
        return self.requested_seconds / self.dense_seconds

    @property
    def achieved_ratio(self) -> float:
        return self.achieved_seconds / self.dense_seconds


def search_latency(
    heads: Sequence[torch.Tensor],
    neurons: Sequence[torch.Tensor],
    table: LatencyTable,
    latency_ratio: float,
    round_to: int = 1,
) -> LatencyResult:
    """Keep the heads and neurons (importance per block, higher = keep) whose estimated time fits
    `latency_ratio` of the dense model's, with the most summed importance (the MAC search's enumeration)."""
    if not 0 < latency_ratio <= 1:
        raise ValueError(f"latency_ratio must be in (0, 1], got {latency_ratio}")
    if (tuple(map(len, heads)), tuple(map(len, neurons))) != (table.heads, table.neurons):
        raise ValueError(f"scores for other widths than the table's {table.heads} / {table.neurons}")
    dense = table.dense_seconds()
    requested = latency_ratio * dense
    if requested < table.fixed:
        raise ValueError(
            f"latency_ratio {latency_ratio} is below the fixed share {table.fixed / dense:.3f} of the time"
        )
    masks, importance = select_units(
        heads,
        neurons,
        [fit.cumulative(h) for fit, h in zip(table.attention, table.heads, strict=True)],
        [fit.cumulative(m) for fit, m in zip(table.mlp, table.neurons, strict=True)],
        requested - table.fixed,
        round_to,
    )
    kept = masks.kept()
    return LatencyResult(
        masks, Widths(*kept, table.tokens), requested, table.seconds(*kept), dense, importance
    )
