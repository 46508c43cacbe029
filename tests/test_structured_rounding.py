"""Structured search with MLP widths rounded to multiples of 8 or 32 (issue 15)."""

from __future__ import annotations

import pytest
import timm
import torch

from ovit_ray.pruning.structured import VitCosts, search_flops


def _costs() -> VitCosts:
    """A tiny ViT's costs: 3 blocks, 4 heads of 8, 64 neurons, 16 + 1 tokens."""
    arch = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=7)
    with torch.device("meta"):
        return VitCosts.of(timm.create_model("vit_tiny_patch16_224", pretrained=False, **arch))


def _scores(seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(4, generator=g) for _ in range(3)], [
        torch.rand(64, generator=g) * 0.05 for _ in range(3)
    ]


@pytest.mark.parametrize("round_to", [8, 32])
def test_rounded_widths_are_multiples_and_meet_the_budget(round_to: int) -> None:
    costs = _costs()
    heads, neurons = _scores(5)
    for tokens in (None, (17, 12, 7)):
        for ratio in (0.3, 0.5, 0.61, 0.7, 0.85, 0.97, 1.0):
            result = search_flops(heads, neurons, costs, ratio, tokens, round_to=round_to)
            assert all(m % round_to == 0 for m in result.widths.neurons)
            assert result.achieved_macs <= result.requested_macs
            group = max(round_to * costs.neuron_macs(n) for n in result.widths.tokens)  # the dearest group
            assert result.requested_macs < result.achieved_macs + group, (tokens, ratio)
            again = search_flops(heads, neurons, costs, ratio, tokens, round_to=round_to)
            assert all(
                torch.equal(a, b) for a, b in zip(result.masks.neurons, again.masks.neurons, strict=True)
            )
            assert all(torch.equal(a, b) for a, b in zip(result.masks.heads, again.masks.heads, strict=True))


def test_rounded_groups_keep_each_blocks_most_important_neurons() -> None:
    costs = _costs()
    heads, neurons = _scores(6)
    result = search_flops(heads, neurons, costs, 0.6, round_to=8)
    for scores, keep in zip(neurons, result.masks.neurons, strict=True):
        kept = int(keep.sum())
        assert torch.equal(
            keep, torch.zeros_like(keep).index_fill(0, scores.argsort(descending=True)[:kept], True)
        )


def test_round_to_one_is_the_plain_search_and_others_are_refused() -> None:
    costs = _costs()
    heads, neurons = _scores(7)
    plain, one = (
        search_flops(heads, neurons, costs, 0.6),
        search_flops(heads, neurons, costs, 0.6, round_to=1),
    )
    assert plain.widths == one.widths and plain.importance == one.importance
    assert all(torch.equal(a, b) for a, b in zip(plain.masks.neurons, one.masks.neurons, strict=True))
    with pytest.raises(ValueError, match="round_to"):
        search_flops(heads, neurons, costs, 0.6, round_to=4)
