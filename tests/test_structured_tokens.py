"""ToMe-style token merging on timm ViTs (dense, masked and shrunk), its costs, and the token share of the
structured search (issue 15)."""

from __future__ import annotations

import copy
import pickle

import pytest
import timm
import torch
from tiny_vits import tiny_vit, units_removed
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ovit_ray.pruning.structured import (
    VitCosts,
    masked,
    merge_schedule,
    merge_tokens,
    merged_tokens,
    merging,
    search_flops,
    shrink,
    unmerge_tokens,
)


def _images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _block_inputs(model: nn.Module, x: torch.Tensor) -> list[int]:
    counts: list[int] = []
    hooks = [
        b.register_forward_pre_hook(lambda _m, args: counts.append(args[0].shape[1])) for b in model.blocks
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return counts


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_no_merges_is_the_plain_model_and_removal_restores_it(pool: str) -> None:
    model = tiny_vit(global_pool=pool)
    x = _images()
    with torch.no_grad():
        plain = model(x)
        with merging(model, [0, 0, 0]):
            assert merge_schedule(model) == (0, 0, 0)
            assert torch.equal(model(x), plain)
        with merging(model, [3, 3, 3]):
            assert not torch.allclose(model(x), plain)
        assert type(model) is timm.models.vision_transformer.VisionTransformer
        assert torch.equal(model(x), plain) and merge_schedule(model) == (0, 0, 0)


@pytest.mark.parametrize("pool, registers", [("token", 0), ("avg", 2)])
def test_merged_model_is_finite_deterministic_and_merges_as_scheduled(pool: str, registers: int) -> None:
    model = tiny_vit(global_pool=pool, reg_tokens=registers)
    prefix = model.num_prefix_tokens
    x = _images()
    merge_tokens(model, [4, 9, 3])  # 9 is capped at half of the 12 unprotected tokens left
    with torch.no_grad():
        first, again = model(x), model(x)
        single = model(x[:1])
    assert torch.isfinite(first).all() and torch.equal(first, again)
    torch.testing.assert_close(single, first[:1], rtol=1e-5, atol=1e-5)  # per image, not across the batch
    counts, merged = merged_tokens(16 + prefix, prefix, [4, 9, 3])
    assert merged == (4, 6, 3) and _block_inputs(model, x) == list(counts)
    sizes = model.merge_sizes.size
    assert sizes.shape == (4, counts[-1] - 3, 1)
    assert torch.equal(sizes[:, :prefix], torch.ones(4, prefix, 1))  # prefix tokens never merged
    assert torch.equal(sizes.sum(dim=1), torch.full((4, 1), 16.0 + prefix))  # every patch still counted once
    clone = pickle.loads(pickle.dumps(copy.deepcopy(model)))
    with torch.no_grad():
        assert torch.equal(clone(x), first)
    unmerge_tokens(model)
    assert merge_schedule(model) == (0, 0, 0) and not hasattr(model, "merge_sizes")


def test_prefix_tokens_survive_even_when_they_match_best() -> None:
    """The cls and register tokens equal to a patch token (the best possible match) stay as they are."""
    model = tiny_vit(reg_tokens=1, depth=1)
    block = model.blocks[0]
    merge_tokens(model, [8])
    x = torch.randn(2, 18, 32, generator=torch.Generator().manual_seed(2))
    x[:, :2] = x[:, 2:4]
    outputs: list[torch.Tensor] = []
    block.mlp.register_forward_hook(lambda _m, args, _o: outputs.append(args[0]))
    with torch.no_grad():
        normed = block.norm1(x)
        residual = x + block.ls1(block.attn(normed))
        block(x)
    assert outputs[0].shape == (2, 10, 32)
    torch.testing.assert_close(outputs[0][:, :2], block.norm2(residual)[:, :2])


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_merged_macs_equal_flop_counter_dense_and_shrunk(pool: str) -> None:
    model = tiny_vit(global_pool=pool)
    x = _images(1)
    small = shrink(
        model, units_removed(model, seed=3)
    )  # block 1 has no heads: it matches on its norm1 output
    for net in (model, small):
        merge_tokens(net, [5, 3, 2])
        costs = VitCosts.of(net)
        assert costs.widths.merged == (5, 3, 2) and costs.widths.tokens == (17, 12, 9)
        assert costs.macs() * 2 == _flops(net, x)
        with torch.no_grad():
            assert torch.isfinite(net(_images())).all()
    zero = VitCosts.of(small).merge_macs(12, 3, 0)
    assert zero == 6 * 5 * 32 and VitCosts.of(small).merge_macs(12, 3, 2) == 6 * 5 * 8


def test_masked_model_merges_too() -> None:
    model = tiny_vit()
    x = _images()
    with torch.no_grad(), merging(model, [2, 2, 2]), masked(model, units_removed(model, seed=3)):
        assert torch.isfinite(model(x)).all()


def _scores(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, generator=g) for _ in range(3)], [
        torch.rand(64, generator=g) * 0.05 for _ in range(3)
    ]


@pytest.mark.parametrize("share", [0.3, 0.5, 0.85])
def test_token_share_schedule_is_monotone_and_the_budget_is_met(share: float) -> None:
    model = tiny_vit(img_size=32)  # 64 patches + cls
    costs = VitCosts.of(model)
    heads, neurons = _scores(4)
    for ratio in (0.5, 0.7, 0.9):
        result = search_flops(heads, neurons, costs, ratio, token_share=share)
        w = result.widths
        r = w.merged
        assert r[0] > 0 and r == merged_tokens(65, 1, [r[0]] * 3)[1]  # one r for every block, capped
        assert all(a >= b for a, b in zip(w.tokens, w.tokens[1:], strict=False))
        assert result.achieved_macs <= result.requested_macs
        wanted = share * (result.dense_macs - result.requested_macs)
        assert 0 < result.token_saving <= wanted
        bigger = costs.merged_widths(costs.widths.heads, costs.widths.neurons, [r[0] + 1] * 3)
        assert r[0] == 32 or result.dense_macs - costs.macs(bigger) > wanted  # the largest r within the share
        small = merge_tokens(shrink(model, result.masks), r)
        assert _flops(small, torch.randn(1, 3, 32, 32)) == 2 * result.achieved_macs
        # the rest of the budget goes to heads and neurons, short by less than one unit
        unit = max(costs.head_macs(n) for n in w.tokens)
        assert result.requested_macs < result.achieved_macs + unit


def test_token_share_zero_is_the_plain_search_and_bounds_are_checked() -> None:
    costs = VitCosts.of(tiny_vit())
    heads, neurons = _scores(5)
    plain = search_flops(heads, neurons, costs, 0.6)
    assert plain.widths.merged == () and plain.token_saving == 0 and plain.token_share == 0.0
    with pytest.raises(ValueError, match="token_share"):
        search_flops(heads, neurons, costs, 0.6, token_share=0.9)
    with pytest.raises(ValueError, match="leave tokens out"):
        search_flops(heads, neurons, costs, 0.6, tokens=(17, 17, 17), token_share=0.5)
