"""Structured pruning (issue 15): the analytic cost model, the physical shrink, OPTIN scoring and the search."""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ovit_ray.models import create_model
from ovit_ray.pruning.structured import UnitMasks, VitCosts, masked, rebuild, shrink, shrunk_sizes


def _tiny_vit(**kwargs: object) -> nn.Module:
    """An untrained timm ViT small enough for tests: 3 blocks, 4 heads of 8, 64 neurons, 16 + 1 tokens."""
    torch.manual_seed(0)
    arch = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=7)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **{**arch, **kwargs}).eval()
    with torch.no_grad():  # timm starts biases at zero, which would hide a lost bias
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.1)
    return model


def _random_masks(model: nn.Module, seed: int) -> UnitMasks:
    """Random keep masks with a zero-head block (1) and a zero-neuron block (2)."""
    g = torch.Generator().manual_seed(seed)
    dense = UnitMasks.dense(model)
    heads = [torch.rand(len(m), generator=g) < 0.6 for m in dense.heads]
    neurons = [torch.rand(len(m), generator=g) < 0.5 for m in dense.neurons]
    heads[1][:] = False
    neurons[2][:] = False
    return UnitMasks(tuple(heads), tuple(neurons))


def _flop_count(model: nn.Module, run: object) -> int:
    for module in model.modules():  # the manual attention path, whose matmuls flop_counter sees
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()  # type: ignore[operator]
    return counter.get_total_flops()


def test_shrunk_model_equals_masked_model_with_empty_layers() -> None:
    for model in (
        _tiny_vit(),
        _tiny_vit(global_pool="avg", qkv_bias=False),
        create_model("digits-vit").eval(),
    ):
        masks = _random_masks(model, seed=1)
        x = torch.randn(5, 3, 16, 16)
        with torch.no_grad(), masked(model, masks):
            expected = model(x)
        small = shrink(model, masks)
        with torch.no_grad():
            got = small(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert shrunk_sizes(small) == {
            "heads": [int(m.sum()) for m in masks.heads],
            "neurons": [int(m.sum()) for m in masks.neurons],
        }
        assert shrunk_sizes(small)["heads"][1] == 0 and shrunk_sizes(small)["neurons"][2] == 0


def test_shrunk_model_state_dict_round_trip(tmp_path) -> None:
    model = _tiny_vit()
    small = shrink(model, _random_masks(model, seed=2))
    torch.save({"sizes": shrunk_sizes(small), "state": small.state_dict()}, tmp_path / "shrunk.pt")
    saved = torch.load(tmp_path / "shrunk.pt")
    again = rebuild(_tiny_vit(), saved["sizes"])
    again.load_state_dict(saved["state"])  # strict: every key and shape matches
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)


def test_analytic_costs_match_flop_counter_and_parameter_count() -> None:
    model = _tiny_vit()
    costs = VitCosts.of(model)
    x = torch.randn(1, 3, 16, 16)
    assert costs.macs() * 2 == _flop_count(model, lambda: model(x))
    masks = _random_masks(model, seed=3)
    small = shrink(model, masks)
    widths = costs.with_widths(*masks.kept())
    assert costs.macs(widths) * 2 == _flop_count(small, lambda: small(x))
    assert costs.params(widths) == sum(p.numel() for p in small.parameters())
    assert VitCosts.of(small).macs() == costs.macs(widths)
    assert VitCosts.of(small).params() == costs.params(widths)


def test_analytic_costs_with_fewer_tokens_per_block() -> None:
    """Token counts per block (what token pruning will change), against flop_counter on each block."""
    model = _tiny_vit()
    small = shrink(model, _random_masks(model, seed=4))
    costs = VitCosts.of(small)
    tokens = (17, 11, 6)
    x = torch.randn(1, 17, 32)

    def blocks() -> None:
        for block, n in zip(small.blocks, tokens, strict=True):
            block(x[:, :n])

    fixed = costs.macs(costs.with_widths(costs.widths.heads, costs.widths.neurons, (0, 0, 0)))
    assert fixed == costs.fixed_macs
    assert (costs.macs(costs.with_widths(costs.widths.heads, costs.widths.neurons, tokens)) - fixed) * 2 == (
        _flop_count(small, blocks)
    )


def test_deit_small_macs_match_the_literature() -> None:
    """DeiT-S: 4.6 GMAC as reported (ours counts the cls token and the classifier, so a little above 4.57)."""
    with torch.device("meta"):
        model = timm.create_model("deit_small_patch16_224", pretrained=False)
    assert 4.57e9 < VitCosts.of(model).macs() < 4.62e9
