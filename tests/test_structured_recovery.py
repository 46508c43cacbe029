"""PTF-style least-squares rescaling of kept heads and neurons after structured pruning (issue 15)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_vits import tiny_vit, units_removed
from torch import nn

from ovit_ray.pruning.structured import UnitMasks, lsq_rescale, masked, merge_tokens, shrink


def _errors(
    dense: nn.Module, pruned: nn.Module, unscaled: nn.Module, x: torch.Tensor
) -> list[tuple[float, float]]:
    """Per sublayer, on the rescaled model's own stream: the squared distance to the dense model's stream
    after that sublayer with the rescaled and with the unscaled sublayer."""

    def streams(model: nn.Module) -> list[torch.Tensor]:
        states: list[torch.Tensor] = []
        hooks = [b.register_forward_pre_hook(lambda _m, args: states.append(args[0])) for b in model.blocks]
        hooks.append(model.norm.register_forward_pre_hook(lambda _m, args: states.append(args[0])))
        model(x)
        for hook in hooks:
            hook.remove()
        out = []
        for block, state in zip(model.blocks, states, strict=False):
            out += [state, state + block.ls1(block.attn(block.norm1(state)))]
        return [*out, states[-1]]

    targets, inputs = streams(dense)[1:], streams(pruned)[:-1]
    errors = []
    for index, (new, old) in enumerate(zip(pruned.blocks, unscaled.blocks, strict=True)):
        for step, (norm, part, gamma) in enumerate((("norm1", "attn", "ls1"), ("norm2", "mlp", "ls2"))):
            state, target = inputs[2 * index + step], targets[2 * index + step]
            after = [
                state + b.get_submodule(gamma)(b.get_submodule(part)(b.get_submodule(norm)(state)))
                for b in (new, old)
            ]
            errors.append(
                (float((after[0] - target).square().sum()), float((after[1] - target).square().sum()))
            )
    return errors


@torch.no_grad()
def test_rescaled_shrunk_model_reconstructs_every_sublayer_at_least_as_well() -> None:
    dense = tiny_vit()
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    small = shrink(dense, units_removed(dense, seed=2, first_heads=2))
    unscaled = copy.deepcopy(small)
    report = lsq_rescale(dense, small, x)
    assert report.scaled["attn"] == (True, False, True) and report.scaled["mlp"] == (True, True, False)
    for part in ("attn", "mlp"):
        for before, after in zip(report.before[part], report.after[part], strict=True):
            assert after <= before * (1 + 1e-5)
    for new, old in _errors(dense, small, unscaled, x):
        assert new <= old * (1 + 1e-5) + 1e-9
    changed = [k for k, v in small.state_dict().items() if not torch.equal(v, unscaled.state_dict()[k])]
    assert changed == ["blocks.0.attn.proj.weight", "blocks.0.mlp.fc2.weight", "blocks.1.mlp.fc2.weight"] + [
        "blocks.2.attn.proj.weight"
    ]


@pytest.mark.parametrize("seed", [0, 1, 4])
@torch.no_grad()
def test_rescaled_logits_are_closer_to_the_dense_logits(seed: int) -> None:
    """Half the neurons and 40% of the heads gone at random (with an empty attention and MLP for odd seeds):
    the calibration batch's logits come closer to the dense model's (not a guarantee, what we see)."""
    dense = tiny_vit()
    g = torch.Generator().manual_seed(seed)
    full = UnitMasks.dense(dense)
    heads = [torch.rand(len(m), generator=g) < 0.6 for m in full.heads]
    neurons = [torch.rand(len(m), generator=g) < 0.5 for m in full.neurons]
    heads[0][:2] = True
    if seed % 2:
        heads[1][:], neurons[2][:] = False, False
    masks = UnitMasks(tuple(heads), tuple(neurons))
    x = torch.randn(8, 3, 16, 16, generator=g)
    small = shrink(dense, masks)
    unscaled = copy.deepcopy(small)
    lsq_rescale(dense, small, x)
    expected = dense(x)
    assert (small(x) - expected).square().mean() < 0.95 * (unscaled(x) - expected).square().mean()


@torch.no_grad()
def test_rescaling_the_masked_model_equals_rescaling_the_shrunk_model() -> None:
    dense = tiny_vit()
    masks = units_removed(dense, seed=2, first_heads=2)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    small = shrink(dense, masks)
    lsq_rescale(dense, small, x)
    pruned = copy.deepcopy(dense)
    report = lsq_rescale(dense, pruned, x, masks)
    assert report.scaled["attn"] == (True, False, True)
    with masked(pruned, masks):
        torch.testing.assert_close(pruned(x), small(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shrink(pruned, masks)(x), small(x), rtol=1e-4, atol=1e-5)
    in_place = copy.deepcopy(dense)  # the dense model itself as the one pruned by masks
    lsq_rescale(in_place, in_place, x, masks)
    with masked(in_place, masks), masked(pruned, masks):
        torch.testing.assert_close(in_place(x), pruned(x), rtol=0, atol=0)


@torch.no_grad()
def test_out_of_range_scales_leave_the_layer_alone_and_merging_models_are_refused() -> None:
    dense = tiny_vit()
    small = shrink(dense, units_removed(dense, seed=2, first_heads=2))
    for block in small.blocks[:2]:  # outputs 1000x too small: the scales would need to be ~1000
        block.mlp.fc2.weight /= 1000
        block.mlp.fc2.bias.zero_()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    before = copy.deepcopy(small)
    report = lsq_rescale(dense, small, x)
    assert report.scaled["mlp"] == (False, False, False)
    for block, old in zip(small.blocks[:2], before.blocks[:2], strict=True):
        assert torch.equal(block.mlp.state_dict()["fc2.weight"], old.mlp.state_dict()["fc2.weight"])
    with pytest.raises(ValueError, match="merge tokens"):
        lsq_rescale(dense, merge_tokens(small, [1, 1, 1]), x)
