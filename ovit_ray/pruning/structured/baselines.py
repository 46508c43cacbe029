"""The standard structured baselines OPTIN is compared with, as scores of every head and MLP neuron for the
same search, shrink and budgets (issue 25): global group magnitude (L1, L2), first-order Taylor, and random.

Groups. A head owns its rows of q, k and v in `attn.qkv` (weights and biases) and its columns of `attn.proj`;
a neuron owns its `mlp.fc1` row and bias and its `mlp.fc2` column (the proj and fc2 biases stay with the
layer). These are exactly the weights `shrink` removes with the unit: what dependency-graph pruners
(Torch-Pruning's `DependencyGraph`) call a group.

Currency. The search keeps the units of most summed importance within a MAC budget, so the scores of heads
and neurons must be in one currency, or the search removes whichever kind is cheap in score per MAC first
(the raw-norm baseline this replaces lost every head before a neuron: a head's L2 norm grows as the square
root of its size, its MACs linearly). The two magnitude scores and `random` are per-MAC densities times the
unit's MACs; Taylor needs no rescaling (see `taylor_scores`).

Layers. A norm says nothing across layers whose weights have different scales (init, LayerScale, a norm's
gain folded in), so each block's magnitudes are divided by their mean over that block's units of the same
kind (Torch-Pruning's `normalizer="mean"`): a block scaled by 10 scores as before.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .costs import VitCosts
from .units import attention_of, check_vit, mlp_of

__all__ = ["group_norm_scores", "random_scores", "taylor_scores"]

Scores = tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]  # per block: heads, neurons
Elementwise = Callable[[torch.Tensor], torch.Tensor]  # a value per weight, summed over each unit's group


def _group_sums(model: nn.Module, value: Elementwise) -> Scores:
    """Per block, `value` summed over each head's and each neuron's group (float64, CPU); a block whose
    attention or MLP was shrunk to a constant branch has no units of that kind."""
    heads, neurons = [], []
    for block in check_vit(model).blocks:
        attn, mlp = attention_of(block), mlp_of(block)
        if attn is None:
            heads.append(torch.zeros(0, dtype=torch.float64))
        else:
            h, dh = attn.num_heads, attn.head_dim
            total = value(attn.qkv.weight).double().reshape(3, h, dh, -1).sum((0, 2, 3))
            total += value(attn.proj.weight).double().reshape(-1, h, dh).sum((0, 2))
            if attn.qkv.bias is not None:
                total += value(attn.qkv.bias).double().reshape(3, h, dh).sum((0, 2))
            heads.append(total.cpu())
        if mlp is None:
            neurons.append(torch.zeros(0, dtype=torch.float64))
        else:
            _, fc1, fc2 = mlp
            total = value(fc1.weight).double().sum(1) + value(fc2.weight).double().sum(0)
            if fc1.bias is not None:
                total += value(fc1.bias).double()
            neurons.append(total.cpu())
    return tuple(heads), tuple(neurons)


def _group_params(vit: VisionTransformer) -> list[torch.Tensor]:
    """Every parameter a group sums over (`_group_sums`), in no particular order."""
    params: list[torch.Tensor | None] = []
    for block in vit.blocks:
        attn, mlp = attention_of(block), mlp_of(block)
        if attn is not None:
            params += [attn.qkv.weight, attn.qkv.bias, attn.proj.weight]
        if mlp is not None:
            params += [mlp[1].weight, mlp[1].bias, mlp[2].weight]
    return [p for p in params if p is not None]


def _unit_macs(model: nn.Module) -> tuple[list[float], list[float]]:
    """MACs of one head and of one neuron per block, at the tokens the model itself runs (`VitCosts`)."""
    costs = VitCosts.of(model)
    merged = costs.widths.merged or (0,) * len(costs.widths.tokens)
    tokens = list(zip(costs.widths.tokens, merged, strict=True))
    return [float(costs.head_macs(n)) for n, _ in tokens], [
        float(costs.neuron_macs(n - r)) for n, r in tokens
    ]


def _per_mac(model: nn.Module, density: Scores) -> Scores:
    """Each unit's density times its MACs: at equal density a head and a neuron are worth the same per MAC,
    so the search trades them on their density alone."""
    head_macs, neuron_macs = _unit_macs(model)
    return (
        tuple(d * m for d, m in zip(density[0], head_macs, strict=True)),
        tuple(d * m for d, m in zip(density[1], neuron_macs, strict=True)),
    )


def _layer_mean(scores: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Each block's scores over their mean (a block whose units all score 0 keeps zeros)."""
    return tuple(s / s.mean() if len(s) and float(s.mean()) > 0 else s for s in scores)


@torch.no_grad()
def group_norm_scores(model: nn.Module, p: int) -> Scores:
    """Global group magnitude (`group-l1` with p = 1, `group-l2` with p = 2).

    The group's L_p norm over its weights and biases; divided by the mean of that block's norms of the same
    kind (so blocks compare: Torch-Pruning's `normalizer="mean"`); times the unit's MACs (so heads and
    neurons compare, module docstring). A size normalisation (dividing by the group's weight count, which
    Torch-Pruning's `group_reduction="mean"` amounts to) would cancel in the per-block mean and is not
    applied. Data-free.
    """
    if p not in (1, 2):
        raise ValueError(f"group norms are L1 or L2, got p={p}")
    heads, neurons = _group_sums(model, (lambda w: w.abs()) if p == 1 else (lambda w: w.square()))
    if p == 2:
        heads, neurons = tuple(h.sqrt() for h in heads), tuple(n.sqrt() for n in neurons)
    return _per_mac(model, (_layer_mean(heads), _layer_mean(neurons)))


def taylor_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Scores:
    """First-order Taylor importance: Σ |w · ∂L/∂w| over the unit's group, L the mean cross-entropy of the
    model (in eval mode, as it will be used) on the labelled calibration batch.

    Each term estimates, to first order, how much the loss moves when that weight is zeroed, so the scores
    are already in one currency across blocks and kinds (loss per unit) and are used as they are: a
    per-block normalisation would erase what Taylor adds over magnitude, which layers the loss is sensitive
    to. The elementwise |·| before the sum is Torch-Pruning's `TaylorImportance`.
    """
    vit = check_vit(model)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"taylor needs one label per calibration image, got {tuple(labels.shape)} labels")
    params = _group_params(vit)
    param = next(vit.parameters())
    was_training, needed = vit.training, [p.requires_grad for p in params]
    vit.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            logits = vit(images.to(device=param.device, dtype=param.dtype))
            loss = nn.functional.cross_entropy(logits, labels.to(device=param.device, dtype=torch.long))
            grads = dict(zip(map(id, params), torch.autograd.grad(loss, params), strict=True))
    finally:
        vit.train(was_training)
        for p, flag in zip(params, needed, strict=True):
            p.requires_grad_(flag)
    return _group_sums(vit, lambda w: (w.detach() * grads[id(w)]).abs())


def random_scores(model: nn.Module, seed: int) -> Scores:
    """The floor: a seeded uniform density per unit, times its MACs (so random removes about the same share
    of each kind's MACs, instead of every head first)."""
    heads, neurons = [], []
    generator = torch.Generator().manual_seed(seed)
    for block in check_vit(model).blocks:
        attn, mlp = attention_of(block), mlp_of(block)
        heads.append(torch.rand(attn.num_heads if attn is not None else 0, generator=generator).double())
        neurons.append(
            torch.rand(mlp[1].out_features if mlp is not None else 0, generator=generator).double()
        )
    return _per_mac(model, (tuple(heads), tuple(neurons)))
