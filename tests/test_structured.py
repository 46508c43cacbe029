"""Structured pruning (issue 15): the analytic cost model, the physical shrink, OPTIN scoring (its fast path
against the masked pass, issue 25) and the search."""

from __future__ import annotations

import pytest
import timm
import torch
from tiny_vits import tiny_vit
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ovit_ray.models import create_model
from ovit_ray.pruning.structured import (
    OptinSettings,
    TrajectoryLosses,
    UnitMasks,
    VitCosts,
    masked,
    optin_scores,
    rebuild,
    search_flops,
    shrink,
    shrunk_sizes,
)


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
        tiny_vit(),
        tiny_vit(global_pool="avg", qkv_bias=False),
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
    model = tiny_vit()
    small = shrink(model, _random_masks(model, seed=2))
    torch.save({"sizes": shrunk_sizes(small), "state": small.state_dict()}, tmp_path / "shrunk.pt")
    saved = torch.load(tmp_path / "shrunk.pt", weights_only=True)
    again = rebuild(tiny_vit(), saved["sizes"])
    again.load_state_dict(saved["state"])  # strict: every key and shape matches
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x), rtol=0, atol=0)


def test_analytic_costs_match_flop_counter_and_parameter_count() -> None:
    model = tiny_vit()
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
    model = tiny_vit()
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


def _reference_losses(
    model: nn.Module, x: torch.Tensor, layer: int, kind: str, unit: int
) -> tuple[float, float]:
    """MD and KD of one masked unit from a full forward pass of the masked model (no cache, no batching),
    with every token in the Gram matrices (the sum of squares does not depend on their order)."""
    features: list[torch.Tensor] = []
    hooks = [b.norm1.register_forward_hook(lambda _m, _i, out: features.append(out)) for b in model.blocks]
    hooks.append(model.norm.register_forward_hook(lambda _m, _i, out: features.append(out)))
    dense = UnitMasks.dense(model)
    chosen = getattr(dense, kind)[layer].clone()
    chosen[unit] = False
    rows = tuple(chosen if i == layer else m for i, m in enumerate(getattr(dense, kind)))
    masks = UnitMasks(rows, dense.neurons) if kind == "heads" else UnitMasks(dense.heads, rows)
    with torch.no_grad():
        teacher_logits = model(x)
        teacher, features[:] = list(features), []
        with masked(model, masks):
            student_logits = model(x)
    for hook in hooks:
        hook.remove()

    def gram(f: torch.Tensor) -> torch.Tensor:
        flat = nn.functional.normalize(f.flatten(0, 1), dim=-1)
        return flat @ flat.T

    md = sum(
        float(((gram(s) - gram(t)) ** 2).sum())
        for s, t in list(zip(features, teacher, strict=True))[layer + 1 :]
    )
    p, q = teacher_logits.log_softmax(-1), student_logits.log_softmax(-1)
    return md, float((p.exp() * (p - q)).sum()) * 16.0


@pytest.mark.parametrize("width", [32, 96])  # 68 tokens in the Gram: its d x d form, then its K x K form
def test_optin_scores_batched_equal_one_per_pass_and_a_full_masked_pass(width: int) -> None:
    model = tiny_vit(embed_dim=width, mlp_ratio=64 / width).double()  # 64 neurons per block
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    one = optin_scores(model, x, OptinSettings(candidates_per_pass=1))
    many = optin_scores(model, x, OptinSettings(candidates_per_pass=5))
    for kind in ("heads", "neurons"):
        for a, b in zip(getattr(one, kind), getattr(many, kind), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-12)
    assert one.kd_scale == many.kd_scale
    for layer, kind, unit in [(0, "heads", 1), (1, "neurons", 7), (2, "heads", 3), (2, "neurons", 0)]:
        md, kd = _reference_losses(model, x, layer, kind, unit)
        assert abs(float(many.md[kind][layer][unit]) - md) <= 1e-7 * max(md, 1e-12)
        assert abs(float(many.kd[kind][layer][unit]) - kd) <= 1e-7 * max(kd, 1e-12)
    assert all(len(h) == 4 for h in many.heads) and all(len(n) == 64 for n in many.neurons)
    assert float(many.neurons[-1].abs().max()) < 1e-3 * float(many.neurons[0].abs().max())  # last-layer decay


def test_optin_scores_deterministic_for_a_seed() -> None:
    model = tiny_vit()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    first, again = (optin_scores(model, x, OptinSettings(gram_tokens=20, seed=3)) for _ in range(2))
    other = optin_scores(model, x, OptinSettings(gram_tokens=20, seed=4))
    assert all(torch.equal(a, b) for a, b in zip(first.neurons, again.neurons, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(first.heads, again.heads, strict=True))
    assert not torch.equal(first.md["neurons"][0], other.md["neurons"][0])


def test_search_meets_the_flops_budget_within_one_unit() -> None:
    model = tiny_vit()
    costs = VitCosts.of(model)
    g = torch.Generator().manual_seed(5)
    heads = [torch.rand(4, generator=g) for _ in range(3)]
    neurons = [torch.rand(64, generator=g) * 0.05 for _ in range(3)]
    for tokens in (None, (17, 12, 7)):
        for ratio in (0.3, 0.5, 0.61, 0.7, 0.85, 0.97, 1.0):
            result = search_flops(heads, neurons, costs, ratio, tokens)
            unit = max(costs.neuron_macs(n) for n in result.widths.tokens)  # the dearest neuron
            assert result.achieved_macs <= result.requested_macs < result.achieved_macs + unit, (
                tokens,
                ratio,
            )
            assert abs(result.requested_ratio - ratio) < 1e-12
            small = shrink(model, result.masks)
            if tokens is None:  # what the shrunk model really costs
                assert VitCosts.of(small).macs() == result.achieved_macs
    full = search_flops(heads, neurons, costs, 1.0)
    assert full.masks.kept() == ((4, 4, 4), (64, 64, 64))


def test_search_prefers_the_more_important_units() -> None:
    """Block 0's heads and block 2's neurons matter; the rest do not: they go first."""
    costs = VitCosts.of(tiny_vit())
    heads = [torch.full((4,), 10.0), torch.zeros(4), torch.zeros(4)]
    neurons = [torch.zeros(64), torch.zeros(64), torch.ones(64)]
    result = search_flops(heads, neurons, costs, 0.5)
    kept_heads, kept_neurons = result.masks.kept()
    assert kept_heads[0] == 4 and kept_heads[1:] == (0, 0)
    assert kept_neurons[2] == 64 and result.importance == 40.0 + 64.0


def _fast_and_slow(model: nn.Module, x: torch.Tensor, neurons_every: int) -> list[tuple[torch.Tensor, ...]]:
    """Per block and kind, (fast MD, fast KD, slow MD, slow KD) of all heads and every n-th neuron."""
    heads, neurons = UnitMasks.dense(model).kept()
    out = []
    with torch.no_grad():
        teacher = TrajectoryLosses(model, x, OptinSettings(seed=1))
        for layer in range(len(heads)):
            for kind, width in (("heads", heads[layer]), ("neurons", neurons[layer])):
                units = torch.arange(width)[:: 1 if kind == "heads" else neurons_every]
                fast = teacher.losses(layer, kind, units, width)
                slow = teacher.masked_losses(layer, kind, units, width)
                out.append((*fast, *slow))
    return out


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"),
    [(torch.float64, 1e-8, 1e-9), (torch.float32, 1e-3, 1e-4)],  # float32: KD's own rounding is ~1e-5
)
def test_optin_fast_path_equals_the_masked_pass_on_the_preset(digits_preset, dtype, rtol, atol) -> None:
    """`losses` starts after the candidate's block from the teacher's internals; `masked_losses` masks the
    unit and runs that block again (the slow path): every head's and 16 neurons' MD and KD per block agree."""
    model = create_model("digits-vit", checkpoint=digits_preset).eval().to(dtype)
    x = torch.randn(16, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for md, kd, slow_md, slow_kd in _fast_and_slow(model, x, neurons_every=16):
        assert float(slow_md.min()) > 0 and float(slow_kd.min()) > 0
        torch.testing.assert_close(md, slow_md, rtol=rtol, atol=atol)
        torch.testing.assert_close(kd, slow_kd, rtol=rtol, atol=atol)


def test_optin_fast_path_with_layer_scale() -> None:
    """LayerScale and random norm affines: the unit's share passes through ls1 / ls2 as in the block."""
    model = tiny_vit(random_norms=True, init_values=0.5).double()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for md, kd, slow_md, slow_kd in _fast_and_slow(model, x, neurons_every=1):
        torch.testing.assert_close(md, slow_md, rtol=1e-8, atol=1e-9)
        torch.testing.assert_close(kd, slow_kd, rtol=1e-8, atol=1e-9)


def test_optin_progress_bar_only_on_request(capsys) -> None:
    """Under pytest stderr is no terminal: no bar unless asked; asked, the bar is drawn on stderr."""
    model = tiny_vit()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    quiet = optin_scores(model, x, OptinSettings(gram_tokens=20))
    assert capsys.readouterr() == ("", "")
    shown = optin_scores(model, x, OptinSettings(gram_tokens=20), progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "OPTIN scores of 204 units" in err
    assert all(torch.equal(a, b) for a, b in zip(quiet.neurons, shown.neurons, strict=True))
