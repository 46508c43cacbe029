"""The structural steps of a BoundaryDPT run, each on the model in place (or returning the edited copy):
the depth plan from per-type scores, entering a phase (its edits), BoundaryDPT+'s width step, and the merge.

Kept apart from the loop (`run.DepthRun`) so the benchmark and the tests can apply exactly what a run applies.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ovit_ray.data import DatasetSplits
from ovit_ray.models import cache_dir, save_checkpoint
from ovit_ray.pruning.depth import (
    DepthPlan,
    DepthScores,
    DepthScoreSettings,
    anneal_activation,
    annealed_activations,
    depth_scores,
    drop_attention,
    merge_mlp,
    select,
    set_activation_mix,
)
from ovit_ray.pruning.depth.structure import depth_structure, vit_blocks
from ovit_ray.pruning.structured import OptinSettings, UnitMasks, VitCosts, get_scorer, search_flops
from ovit_ray.training.structured import calibration_images
from ovit_ray.training.structured.cache import cached_blob, fingerprint


def calibration(data: DatasetSplits, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """The seeded calibration batch, under its own RNG: the training split's augmentation draws from torch's
    global one, and a resumed run must score the same images."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return calibration_images(data, size, seed).to(device)


def depth_plan(
    model: nn.Module, images: torch.Tensor, scorer: str, attention: int, activation: int, seed: int
) -> DepthPlan:
    """Which blocks lose their attention and which activations go: each type ranked on its own `scorer`
    scores of the calibration `images` (BoundaryDPT's gradient disparity: never one list for both)."""
    settings = DepthScoreSettings(optin=OptinSettings(seed=seed), taylor=scorer == "taylor")
    return select(cached_depth_scores(model, images, settings), scorer, attention, activation)


def cached_depth_scores(
    model: nn.Module, images: torch.Tensor, settings: DepthScoreSettings, cache: Path | None = None
) -> DepthScores:
    """`depth_scores`, computed once per (weights, calibration images, settings) and kept on disk beside the
    structured scores (`<cache>/depth-scores/<hash>.pt`): every budget of a sweep reuses them."""
    key = fingerprint(model, images, f"depth|{settings}")

    def compute() -> dict[str, Any]:
        scores = depth_scores(model, images, settings)
        return {"attention": scores.attention, "activation": scores.activation}

    blob = cached_blob((cache or cache_dir()) / "depth-scores" / f"{key}.pt", compute)[0]
    return DepthScores(attention=dict(blob["attention"]), activation=dict(blob["activation"]))


def enter_attention(model: nn.Module, plan: DepthPlan) -> None:
    """Stage 1's edit: the planned attention sublayers become their constant `ls1(proj.bias)` branch."""
    blocks = vit_blocks(model)
    for b in plan.drop_attention:
        drop_attention(blocks[b], keep_bias=True)


def enter_activation(model: nn.Module, plan: DepthPlan, a: float = 1.0) -> None:
    """Stage 2's edit: the planned activations wrapped for annealing, at mix `a` (1: the model is unchanged)."""
    blocks = vit_blocks(model)
    for b in plan.linearise:
        anneal_activation(blocks[b], a)


def removed_at_once(model: nn.Module, plan: DepthPlan) -> nn.Module:
    """A copy with every planned edit made at once, activations already linear: the model before any
    fine-tune (what "top-1 right after removal" measures)."""
    out = copy.deepcopy(model)
    enter_attention(out, plan)
    enter_activation(out, plan, 0.0)
    return out


def annealing_done(model: nn.Module) -> bool:
    """Whether every annealed activation has reached the identity (a == 0)."""
    return all(act.a == 0.0 for act in annealed_activations(model))


def anneal_mix(step: int, steps: int) -> float:
    """The activation mix after `step` of the stage's `steps` optimizer steps: linear, exactly 0 at the end."""
    return 0.0 if step >= steps else 1.0 - step / steps


def set_mix(model: nn.Module, step: int, steps: int) -> None:
    set_activation_mix(model, anneal_mix(step, steps))


def width_masks(model: nn.Module, images: torch.Tensor, ratio: float, seed: int) -> UnitMasks:
    """BoundaryDPT+'s width step: OPTIN scores of the depth-pruned (linearised, not yet merged) model, then
    the heads and neurons that fit `ratio` of its own analytic MACs."""
    scores = get_scorer("optin").score(model, images, OptinSettings(seed=seed))
    return search_flops(scores.heads, scores.neurons, VitCosts.of(model), ratio).masks


def merge_linearised(model: nn.Module) -> int:
    """Merge every MLP annealed to a = 0 (norm2's affine folded in; thin MLPs keep two GEMMs); returns how
    many became one d x d Linear. The merged model computes the linearised one's function (to rounding)."""
    merged = 0
    for block, state in zip(vit_blocks(model), depth_structure(model)["mlp"], strict=True):
        if state == "annealed":
            merged += merge_mlp(block)
    return merged


def freeze_unused(model: nn.Module) -> None:
    """Stop training the norms whose output nothing reads any more: `norm1` of a dropped attention, `norm2` of
    an MLP with no neuron left. (They would get no gradient, which DDP refuses.)"""
    structure = depth_structure(model)
    for block, attn, mlp in zip(vit_blocks(model), structure["attention"], structure["mlp"], strict=True):
        block.get_submodule("norm1").requires_grad_(attn == "kept")
        block.get_submodule("norm2").requires_grad_(mlp != "absent")


def save_final(model: nn.Module, path: Path, meta: dict[str, Any]) -> Path:
    """Keep the final model merged (a copy, when its MLPs are still annealed at a = 0) with the
    `depth_structure` that `training.setup.with_structure` rebuilds it from."""
    merged = copy.deepcopy(model)
    merge_linearised(merged)
    return save_checkpoint(
        path, merged, None, {**meta, "method": "boundarydpt", "depth_structure": depth_structure(merged)}
    )


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
