"""Depth pruning's structural edits (issue 16): attention drop, annealed activation, MLP merge, the recorded
structure and the analytic costs, on dense and shrunk tiny timm ViTs."""

from __future__ import annotations

import copy

import torch
from tiny_vits import tiny_vit
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ovit_ray.pruning.depth import (
    DepthCosts,
    anneal_activation,
    depth_structure,
    drop_attention,
    merge_mlp,
    rebuild_depth,
    set_activation_mix,
)
from ovit_ray.pruning.structured import UnitMasks, masked, merge_tokens, shrink


def _images(n: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(7))


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _half_masks(model: nn.Module) -> UnitMasks:
    """Two heads everywhere; 40, 8 (below d/2 = 16) and 64 neurons."""
    return UnitMasks.first(model, (2, 2, 2), (40, 8, 64))


def test_dropping_attention_equals_masking_all_its_heads() -> None:
    for model in (
        tiny_vit(random_norms=True),
        tiny_vit(random_norms=True, init_values=0.5),
        shrink(tiny_vit(random_norms=True), _half_masks(tiny_vit(random_norms=True))),
    ):
        x = _images()
        dense = UnitMasks.dense(model)
        heads = tuple(torch.zeros_like(m) if i == 1 else m for i, m in enumerate(dense.heads))
        with torch.no_grad(), masked(model, UnitMasks(heads, dense.neurons)):
            expected = model(x)
        with torch.no_grad():  # dropping it entirely: an attention whose proj adds nothing
            proj = model.blocks[1].attn.proj
            saved = proj.weight.clone(), proj.bias.clone()
            proj.weight.zero_(), proj.bias.zero_()
            zero = model(x)
            proj.weight.copy_(saved[0]), proj.bias.copy_(saved[1])
        dropped = rebuild_depth(model, {"attention": ["kept", "bias", "kept"], "mlp": ["act"] * 3})
        assert depth_structure(dropped)["heads"][1] == 0
        torch.testing.assert_close(_logits(dropped, x), expected, rtol=1e-5, atol=1e-5)
        drop_attention(dropped.blocks[1], keep_bias=False)
        torch.testing.assert_close(_logits(dropped, x), zero, rtol=1e-5, atol=1e-5)
        assert depth_structure(dropped)["attention"] == ["kept", "none", "kept"]


def test_annealed_activation_is_the_original_at_one_and_exactly_linear_at_zero() -> None:
    model = tiny_vit(random_norms=True)
    mlp = model.blocks[0].mlp
    h = torch.randn(2, 17, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = mlp(h)
        act = anneal_activation(model.blocks[0])
        assert torch.equal(mlp(h), dense)
        act.a = 0.25
        mixed = 0.25 * nn.functional.gelu(mlp.fc1(h)) + 0.75 * mlp.fc1(h)
        torch.testing.assert_close(mlp(h), mlp.fc2(mixed), rtol=1e-6, atol=1e-6)
        set_activation_mix(model, 0.0)
        assert torch.equal(mlp(h), mlp.fc2(mlp.fc1(h)))


def _linearised(model: nn.Module) -> nn.Module:
    for block in model.blocks:
        anneal_activation(block, 0.0)
    return model


def test_merged_mlps_equal_the_linearised_model_and_save_parameters() -> None:
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        base = tiny_vit(random_norms=True, init_values=0.5).to(dtype)
        model = _linearised(shrink(base, _half_masks(base)))  # block 1 keeps 8 < d/2 neurons
        x = _images(dtype=dtype)
        expected = _logits(model, x)
        before = sum(p.numel() for p in model.parameters())
        merged = [merge_mlp(block) for block in model.blocks]
        assert merged == [True, False, True]
        assert depth_structure(model)["mlp"] == ["merged", "identity", "merged"]
        torch.testing.assert_close(_logits(model, x), expected, rtol=tol, atol=tol)
        d = 32
        two_gemms = [2 * d * h + h + d for h in (40, 64)]  # fc1 with bias, fc2 with bias
        saved = sum(two_gemms) - 2 * (d * d + d) + 3 * 2 * d  # and every norm2 lost gamma and beta
        assert sum(p.numel() for p in model.parameters()) == before - saved


def test_depth_pruned_model_state_dict_round_trip(tmp_path) -> None:
    model = shrink(tiny_vit(random_norms=True), _half_masks(tiny_vit(random_norms=True)))
    drop_attention(model.blocks[0])
    drop_attention(model.blocks[2], keep_bias=False)
    anneal_activation(model.blocks[0], 0.0)
    anneal_activation(model.blocks[1], 0.0)
    merge_mlp(model.blocks[0]), merge_mlp(model.blocks[1])
    anneal_activation(model.blocks[2], 0.4)  # mid-schedule: the mix travels in the state_dict
    record = {"depth": depth_structure(model), "state": model.state_dict()}
    torch.save(record, tmp_path / "depth.pt")
    saved = torch.load(tmp_path / "depth.pt", weights_only=True)
    assert saved["depth"] == {
        "heads": [0, 2, 0],
        "neurons": [0, 8, 64],
        "attention": ["bias", "kept", "none"],
        "mlp": ["merged", "identity", "annealed"],
    }
    again = rebuild_depth(tiny_vit(random_norms=True), saved["depth"])
    again.load_state_dict(saved["state"])  # strict: every key and shape matches
    assert again.blocks[2].mlp.act.a == 0.4
    x = _images()
    torch.testing.assert_close(_logits(again, x), _logits(model, x), rtol=0, atol=0)


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    for module in model.modules():  # the manual attention path, whose matmuls flop_counter sees
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def test_analytic_costs_of_plans_match_the_edited_models() -> None:
    x = _images(1)
    for base in (
        tiny_vit(random_norms=True),
        shrink(tiny_vit(random_norms=True), _half_masks(tiny_vit(random_norms=True))),
    ):
        costs = DepthCosts.of(base)
        assert costs.macs() * 2 == _flops(base, x)
        for drops, linears, keep_bias in (
            ({1}, {0, 1}, True),
            ({0, 2}, {2}, False),
            (set(), {0, 1, 2}, True),
        ):
            model = _linearised(copy.deepcopy(base))
            for b in drops:
                drop_attention(model.blocks[b], keep_bias)
            for b in range(3):
                if b in linears:
                    merge_mlp(model.blocks[b])
                else:
                    anneal_activation(model.blocks[b], 1.0)
            assert costs.macs(drops, linears) * 2 == _flops(model, x)
            assert costs.params(drops, linears, keep_bias) == sum(p.numel() for p in model.parameters())
            after = DepthCosts.of(model)  # read back from the edited model, merged MLPs included
            assert after.macs() == costs.macs(drops, linears)
            assert after.params() == costs.params(drops, linears, keep_bias)
            assert costs.speedup(drops, linears) == costs.macs() / after.macs() > 1.0


def test_width_pruning_after_depth_pruning_then_merging_keeps_the_function() -> None:
    """BoundaryDPT+'s order: drop attention and linearise, shrink heads and neurons, then merge. (Masking a
    block that has no head left is not supported by `structured.masked`, so the reference is the shrunk
    model before the merge, with the same heads and neurons zeroed by hand in the depth-pruned one.)"""
    model = tiny_vit(random_norms=True)
    drop_attention(model.blocks[1])
    _linearised(model)
    masks = UnitMasks.first(model, (3, 0, 1), (40, 8, 33))
    small = shrink(model, masks)
    assert depth_structure(small)["attention"] == ["kept", "bias", "kept"]
    assert depth_structure(small)["mlp"] == ["annealed"] * 3
    x = _images()
    with torch.no_grad():
        for block, heads, neurons in zip(model.blocks, (3, 0, 1), (40, 8, 33), strict=True):
            if heads:
                block.attn.proj.weight[:, heads * 8 :] = 0
            block.mlp.fc2.weight[:, neurons:] = 0
    expected = _logits(model, x)
    torch.testing.assert_close(_logits(small, x), expected, rtol=1e-5, atol=1e-5)
    assert [merge_mlp(block) for block in small.blocks] == [True, False, True]
    torch.testing.assert_close(_logits(small, x), expected, rtol=1e-5, atol=1e-5)
    again = rebuild_depth(tiny_vit(random_norms=True), depth_structure(small))
    again.load_state_dict(small.state_dict())
    assert torch.equal(_logits(again, x), _logits(small, x))


def test_analytic_costs_with_token_merging_match_the_flop_counter() -> None:
    """A ToMe model: a merged MLP costs d x d per token that reaches it (after that block's merges)."""
    x = _images(1)
    model = merge_tokens(tiny_vit(random_norms=True), (4, 2, 0))
    costs = DepthCosts.of(model)
    _linearised(model)
    drop_attention(model.blocks[1])
    merge_mlp(model.blocks[0]), merge_mlp(model.blocks[2])
    assert costs.macs({1}, {0, 2}) * 2 == _flops(model, x) and DepthCosts.of(model).macs() == costs.macs(
        {1}, {0, 2}
    )
