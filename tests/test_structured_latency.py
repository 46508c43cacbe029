"""Latency tables measured on this machine and the structured search under a latency budget (issue 15)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ovit_ray.pruning.structured import (
    LatencyTable,
    PiecewiseLinear,
    measure_latency,
    search_latency,
    shrink,
)


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, num_classes=10, depth=2
    ).eval()


def test_piecewise_fit_recovers_a_constant_then_a_slope() -> None:
    samples = [(k, 5.0 if k <= 4 else 5.0 + 0.5 * (k - 4)) for k in (1, 2, 3, 4, 6, 8, 12)]
    fit = PiecewiseLinear.fit(samples)
    assert (fit.threshold, fit.constant, fit.slope) == (4, 5.0, 0.5)
    assert fit(0) == 0.0 and fit(3) == 5.0 and fit(10) == 8.0
    assert torch.equal(fit.cumulative(3), torch.tensor([0.0, 5.0, 5.0, 5.0], dtype=torch.float64))
    assert fit.samples == tuple(sorted(samples))
    flat = PiecewiseLinear.fit([(1, 2.0), (2, 1.0), (3, 1.5)])  # noise that falls: no negative slope
    assert flat.slope >= 0 and all(flat(k) <= flat(k + 1) for k in range(1, 3))


def test_measured_table_on_a_tiny_vit_and_the_search_respects_it() -> None:
    model = _tiny_vit()  # 2 blocks, 3 heads, 768 neurons, 17 tokens
    table = measure_latency(model, batch_size=2, warmup=1, runs=3, samples=5)
    assert (table.heads, table.neurons, table.tokens) == ((3, 3), (768, 768), (17, 17))
    assert table.attention[0] is table.attention[1]  # equal blocks are timed once
    assert [k for k, _ in table.mlp[0].samples] == [1, 193, 384, 576, 768]
    assert [k for k, _ in table.attention[0].samples] == [1, 2, 3]
    assert (table.batch_size, table.dtype, table.device) == (2, "float32", "cpu")
    for fit, width in ((table.attention[0], 3), (table.mlp[0], 768)):
        curve = fit.cumulative(width)
        assert (curve.diff() >= 0).all() and curve[1] > 0  # monotone, every kept unit costs time
        assert all(t > 0 for _, t in fit.samples)
    assert table.mlp[0].samples[-1][1] > table.mlp[0].samples[0][1]  # 768 neurons take longer than 1
    assert table.fixed >= 0
    g = torch.Generator().manual_seed(0)
    heads = [torch.rand(3, generator=g) for _ in range(2)]
    neurons = [torch.rand(768, generator=g) for _ in range(2)]
    floor = table.fixed / table.dense_seconds()  # what no pruning of heads and neurons removes
    if floor > 0:
        with pytest.raises(ValueError, match="fixed"):
            search_latency(heads, neurons, table, floor * 0.99)
    for part in (0.3, 0.7, 1.0):
        result = search_latency(heads, neurons, table, min(1.0, floor + part * (1 - floor)))
        assert result.achieved_seconds <= result.requested_seconds + 1e-15
        assert result.dense_seconds == table.dense_seconds()
        assert result.achieved_seconds == table.seconds(*result.masks.kept())
        with torch.no_grad():
            assert torch.isfinite(shrink(model, result.masks)(torch.randn(2, 3, 32, 32))).all()


def _table() -> LatencyTable:
    """A fixed table: attention 3 ms flat up to 2 heads then +1 ms a head; MLP 1 ms flat to 16 neurons then
    0.1 ms a neuron; 2 ms elsewhere; two blocks of 4 heads and 64 neurons."""
    attn = PiecewiseLinear(2, 3e-3, 1e-3, ())
    mlp = PiecewiseLinear(16, 1e-3, 1e-4, ())
    return LatencyTable((attn, attn), (mlp, mlp), 2e-3, (4, 4), (64, 64), (17, 17), 1, "float32", "cpu")


def test_latency_search_is_deterministic_and_within_one_unit_of_the_budget() -> None:
    table = _table()
    g = torch.Generator().manual_seed(1)
    heads = [torch.rand(4, generator=g) for _ in range(2)]
    neurons = [torch.rand(64, generator=g) * 0.05 for _ in range(2)]
    assert table.dense_seconds() == pytest.approx(2e-3 + 2 * (5e-3 + 5.8e-3))
    for ratio in (0.3, 0.5, 0.7, 0.9, 1.0):
        result, again = (search_latency(heads, neurons, table, ratio) for _ in range(2))
        assert result.masks.kept() == again.masks.kept() and result.importance == again.importance
        assert all(torch.equal(a, b) for a, b in zip(result.masks.neurons, again.masks.neurons, strict=True))
        assert result.achieved_seconds <= result.requested_seconds
        assert result.requested_ratio == pytest.approx(ratio)
        # short of the budget by less than the dearest unit (a first head or neuron costs its constant)
        assert result.requested_seconds - result.achieved_seconds < 3e-3 + 1e-12
    full = search_latency(heads, neurons, table, 1.0)
    assert full.masks.kept() == ((4, 4), (64, 64))
    rounded = search_latency(heads, neurons, table, 0.6, round_to=8)
    assert all(m % 8 == 0 for m in rounded.widths.neurons)
    with pytest.raises(ValueError, match="other widths"):
        search_latency(heads[:1], neurons[:1], table, 0.5)
