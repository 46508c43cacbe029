"""The structured baselines (issue 25): group L1/L2 magnitude, first-order Taylor and random share OPTIN's
search, shrink and budgets; each lands within one unit below every MAC budget, Taylor reads the labels, the
group norms are normalised so no layer dominates, and the search spends a budget whatever the score scale."""

from __future__ import annotations

import pytest
import torch
from tiny_vits import tiny_vit
from torch import nn

from ovit_ray.models import create_model
from ovit_ray.pruning.names import STRUCTURED_METHODS
from ovit_ray.pruning.structured import OptinSettings, VitCosts, get_scorer, search_flops
from ovit_ray.training.preset import preset_dataset
from ovit_ray.training.structured import calibration_batch

BASELINES = ("group-l1", "group-l2", "taylor", "random")


@pytest.fixture(scope="module")
def preset(digits_preset) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The trained digits preset and 16 labelled calibration images."""
    model = create_model("digits-vit", checkpoint=digits_preset).eval()
    images, labels = calibration_batch(preset_dataset("digits-vit"), 16, seed=0)
    return model, images, labels


def test_the_methods_are_optin_and_the_baselines() -> None:
    assert STRUCTURED_METHODS == ("optin", *BASELINES)
    assert [get_scorer(m).uses_labels for m in STRUCTURED_METHODS] == [False, False, False, True, False]
    with pytest.raises(ValueError, match="unknown structured method 'structured-magnitude'"):
        get_scorer("structured-magnitude")


@pytest.mark.parametrize("method", [*BASELINES, "optin"])
def test_every_method_lands_within_one_neuron_below_each_budget(preset, method: str) -> None:
    model, images, labels = preset
    costs = VitCosts.of(model)
    scores = get_scorer(method).score(model, images, OptinSettings(seed=0), labels=labels)
    neuron = costs.neuron_macs(costs.widths.tokens[0])  # every block sees the same 17 tokens
    for ratio in (0.9, 0.7, 0.5):
        found = search_flops(scores.heads, scores.neurons, costs, ratio)
        assert found.achieved_macs <= found.requested_macs < found.achieved_macs + neuron, (method, ratio)
        assert sum(found.widths.heads) > 0, (method, ratio)  # not the heads-first failure of issue 25


def test_taylor_reads_the_labels(preset) -> None:
    model, images, labels = preset
    taylor = get_scorer("taylor")
    first, again = (taylor.score(model, images, OptinSettings(), labels=labels) for _ in range(2))
    other = taylor.score(model, images, OptinSettings(), labels=(labels + 1) % 10)
    assert all(torch.equal(a, b) for a, b in zip(first.neurons, again.neurons, strict=True))
    assert not torch.allclose(first.neurons[0], other.neurons[0])
    assert not torch.allclose(first.heads[0], other.heads[0])
    assert all(p.grad is None for p in model.parameters())  # gradients taken, nothing left on the model
    with pytest.raises(ValueError, match="taylor scores on a labelled calibration batch"):
        taylor.score(model, images, OptinSettings())


def _scale_block(model: nn.Module, block: int, factor: float) -> None:
    with torch.no_grad():
        for name, param in model.blocks[block].named_parameters():
            if any(part in name for part in ("qkv", "proj", "fc1", "fc2")):
                param.mul_(factor)


@pytest.mark.parametrize("method", ["group-l1", "group-l2"])
def test_group_norms_are_normalised_per_block_and_per_mac(method: str) -> None:
    """A block whose weights are 10x larger scores as before (raw norms would rank all its units first), and
    each block's scores of a kind add up to that kind's MACs there (one currency for heads and neurons)."""
    model = tiny_vit()
    scorer = get_scorer(method)
    before = scorer.score(model, torch.zeros(0), OptinSettings())
    _scale_block(model, 1, 10.0)
    after = scorer.score(model, torch.zeros(0), OptinSettings())
    for kind in ("heads", "neurons"):
        for a, b in zip(getattr(before, kind), getattr(after, kind), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=0)  # float32 weights times 10
    costs = VitCosts.of(model)
    tokens = costs.widths.tokens[0]
    for heads, neurons in zip(after.heads, after.neurons, strict=True):
        assert float(heads.sum()) == pytest.approx(len(heads) * costs.head_macs(tokens))
        assert float(neurons.sum()) == pytest.approx(len(neurons) * costs.neuron_macs(tokens))
        assert float(neurons.std()) > 0  # the norms still tell the units apart


def test_random_scores_are_seeded() -> None:
    model = tiny_vit()
    scorer = get_scorer("random")
    first, again, other = (scorer.score(model, torch.zeros(0), OptinSettings(seed=s)) for s in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(first.neurons, again.neurons, strict=True))
    assert not torch.equal(first.neurons[0], other.neurons[0])


def test_search_spends_the_budget_when_heads_score_little_per_mac() -> None:
    """Issue 25's raw-norm scores (a head's worth 1/100 of its MACs in neurons): the most important masks drop
    heads and keep every neuron, leaving up to a head unspent; the search keeps a head more and fills with
    neurons instead, so it lands within one neuron of every budget."""
    model = tiny_vit()
    costs = VitCosts.of(model)
    tokens = costs.widths.tokens[0]
    per_mac = 1.0 / costs.neuron_macs(tokens)
    heads = [torch.full((4,), 0.01 * costs.head_macs(tokens) * per_mac) for _ in range(3)]
    neurons = [torch.ones(64) for _ in range(3)]
    for ratio in (0.95, 0.9, 0.7, 0.5):
        found = search_flops(heads, neurons, costs, ratio)
        short = found.requested_macs - found.achieved_macs
        assert 0 <= short < costs.neuron_macs(tokens), ratio
