"""The peer benchmark's glue and verdicts (benchmarks/bench_peer_structured.py, issue 25): Torch-Pruning's choice
lands within 1% of the MACs budget and is exactly `shrink(dense, masks)`; a verdict is a win only outside the
seed noise. The glue test needs the optional `bench` extra and skips without it."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from peer_tables import compare  # noqa: E402
from tiny_vits import tiny_vit  # noqa: E402

from ovit_ray.pruning.structured import VitCosts, shrink  # noqa: E402


def _rows(values):
    return [{"seed": seed, "top1": value} for seed, value in enumerate(values)]


def test_a_verdict_needs_the_interval_to_exclude_zero_and_a_fixed_gap_is_not_a_win():
    _, _, verdict = compare(_rows([0.90, 0.91, 0.92]), _rows([0.80, 0.81, 0.80]), 359)
    assert verdict == "wins"
    difference, p, verdict = compare(_rows([0.90, 0.95, 0.85]), _rows([0.89, 0.93, 0.88]), 359)
    assert verdict == "ties" and not difference.excludes_zero and 0 < p < 1
    _, _, verdict = compare(_rows([0.95] * 3), _rows([0.95 - 3 / 359] * 3), 359)
    assert verdict == "higher by 3 of 359 test images, untested (no seed spread)"
    assert compare(_rows([0.9]), _rows([0.8]), 359)[2].startswith("n/a")


@pytest.mark.parametrize("criterion", ["tp-l1", "tp-taylor"])
def test_torch_pruning_lands_within_one_percent_and_equals_our_shrink(criterion):
    pytest.importorskip("torch_pruning", reason="the optional bench extra: pip install -e '.[bench]'")
    from peer_torch_pruning import prune_to_budget

    dense = tiny_vit()
    generator = torch.Generator().manual_seed(0)
    images, labels = (
        torch.randn(8, 3, 16, 16, generator=generator),
        torch.randint(0, 7, (8,), generator=generator),
    )
    found = prune_to_budget(dense, images, labels, criterion, 0.6)
    dense_macs = VitCosts.of(dense).macs()
    assert abs(found.achieved_macs - 0.6 * dense_macs) <= 0.01 * 0.6 * dense_macs
    small = shrink(dense, found.masks).eval()
    assert VitCosts.of(small).macs() == found.achieved_macs
    assert found.max_logit_diff < 1e-5
    assert sum(found.masks.kept()[0]) < 12  # whole heads went, not only neurons
    assert VitCosts.of(dense).embed_dim == VitCosts.of(small).embed_dim  # the residual width is never pruned
