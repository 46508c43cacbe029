"""PTF-style recovery (Kwon et al., NeurIPS 2022, mask tuning): after one-shot pruning, rescale each kept
head and neuron by a real number so that every pruned sublayer best reconstructs what the dense one gives,
solved layer by layer in closed form and folded into the weights, so the model stays as fast as before.

Block by block, on the pruned model's own inputs (earlier layers already rescaled), the residual stream after
a sublayer is x + ls(Σ_u s_u·C_u + bias), where C_u is unit u's share of `proj` (`fc2`): its input slice
times its weight columns. The scales minimise the distance of that stream to the dense model's stream after
the same sublayer (the dense sublayer's output plus the drift earlier layers left, which the scales thereby
also reduce: on random ViTs this brings the logits 2-4x closer, where matching the bare sublayer output did
not), plus λ||s - 1||², λ a small damping relative to the mean Gram diagonal: the scales lean towards 1, and
the damped optimum never reconstructs worse than s = 1. The Gram matrix comes from the slices' and the
columns' Gram matrices, never from the C_u themselves. A failed solve, or a scale outside [-10, 10], leaves
that sublayer as it was (PTF stops there; we go on).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from .tokens import merge_schedule
from .units import UnitMasks, attention_of, check_vit, masked, mlp_of

__all__ = ["MAX_SCALE", "RecoveryReport", "lsq_rescale"]

MAX_SCALE = 10.0


@dataclass(frozen=True)
class RecoveryReport:
    """Per block and sublayer ("attn", "mlp"): the squared distance of the stream after it to the dense
    model's, before and after rescaling (same inputs), and whether it was rescaled (False: no units, a failed
    solve or a scale out of range)."""

    before: dict[str, tuple[float, ...]]
    after: dict[str, tuple[float, ...]]
    scaled: dict[str, tuple[bool, ...]]


def _scales(
    inputs: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor, group: int, damping: float
) -> torch.Tensor | None:
    """Scales of the k units whose input slices are `inputs` (M, k·group) and output columns `weight`
    (d, k·group) reconstructing `residual` (M, d) from their shares; None when the solve fails or a scale
    leaves [-MAX_SCALE, MAX_SCALE]."""
    z, w, r = inputs.double(), weight.double(), residual.double()
    units = z.shape[1] // group
    gram = ((z.T @ z) * (w.T @ w)).reshape(units, group, units, group).sum(dim=(1, 3))
    target = ((z.T @ r) * w.T).sum(dim=1).reshape(units, group).sum(dim=1)
    lam = damping * float(gram.diagonal().mean()) if units else 0.0
    eye = torch.eye(units, dtype=torch.float64)
    try:
        scales = torch.linalg.lstsq(gram + lam * eye, (target + lam)[:, None]).solution[:, 0]
    except RuntimeError:
        return None
    if not bool(torch.isfinite(scales).all()) or float(scales.abs().max()) > MAX_SCALE:
        return None
    return scales


def _states(model: nn.Module, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The residual stream of the model on `images` after every block's attention ("attn") and MLP ("mlp")."""
    vit = check_vit(model)
    images = images.to(next(vit.parameters()))
    states: dict[str, list[torch.Tensor]] = {"attn": [], "mlp": []}
    inputs: list[torch.Tensor] = []
    attn: list[torch.Tensor] = []
    with ExitStack() as stack:
        for block in vit.blocks:
            hooks = (
                block.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])),
                block.get_submodule("attn").register_forward_hook(lambda _m, _i, y: attn.append(y)),
                block.register_forward_hook(lambda _m, _i, y: states["mlp"].append(y)),
            )
            for hook in hooks:
                stack.callback(hook.remove)
        vit(images)
    states["attn"] = [x + b.get_submodule("ls1")(a) for x, a, b in zip(inputs, attn, vit.blocks, strict=True)]
    return states


def _units(
    block: nn.Module, part: str, layer: int, masks: UnitMasks | None
) -> tuple[nn.Linear, torch.Tensor, int] | None:
    """The output Linear of a block's attention ("attn") or MLP ("mlp"), which of its units are kept, and
    how many input columns a unit owns; None for a branch without units."""
    if part == "attn":
        attn = attention_of(block)
        if attn is None:
            return None
        keep = masks.heads[layer] if masks is not None else torch.ones(attn.num_heads, dtype=torch.bool)
        return attn.proj, keep, attn.head_dim
    mlp = mlp_of(block)
    if mlp is None:
        return None
    keep = masks.neurons[layer] if masks is not None else torch.ones(mlp[2].in_features, dtype=torch.bool)
    return mlp[2], keep, 1


def _rescale(
    branch: nn.Module,
    scale: nn.Module,
    units: tuple[nn.Linear, torch.Tensor, int] | None,
    normed: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor,
    damping: float,
) -> tuple[torch.Tensor, float, float, bool]:
    """Rescale the kept units of one sublayer `branch` (fed with `normed`, added to the stream `x` through
    `scale`) towards the dense stream `target`, folded into its output Linear's columns: the new stream,
    the errors before and after, and whether it was rescaled."""
    captured: list[torch.Tensor] = []
    hook = units[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0])) if units else None
    try:
        before = x + scale(branch(normed))
    finally:
        if hook is not None:
            hook.remove()
    error = float((before - target).double().square().sum())
    if units is None or not bool(units[1].any()):
        return before, error, error, False
    linear, keep, group = units
    kept = torch.nonzero(keep.cpu()).flatten()
    cols = (kept[:, None] * group + torch.arange(group)).flatten().to(linear.weight.device)
    inputs = captured[0].flatten(0, -2)[:, cols]
    weight = scale(linear.weight.detach()[:, cols].T).T  # the units' columns as the stream sees them
    residual = (target - before).flatten(0, -2) + inputs @ weight.T  # the target less all but the units
    scales = _scales(inputs, weight, residual, group, damping)
    if scales is None:
        return before, error, error, False
    linear.weight[:, cols] *= scales.repeat_interleave(group).to(linear.weight)
    after = x + scale(branch(normed))
    return after, error, float((after - target).double().square().sum()), True


@torch.no_grad()
def lsq_rescale(
    dense: nn.Module,
    pruned: nn.Module,
    images: torch.Tensor,
    masks: UnitMasks | None = None,
    damping: float = 1e-3,
) -> RecoveryReport:
    """Rescale `pruned`'s kept heads and neurons in place (see the module docstring) on calibration `images`.
    `pruned` is either shrunk (`masks` None) or dense-shaped and pruned by `masks` (it may then be `dense`
    itself: the dense outputs are taken first). Models in eval mode; token-merging models are refused."""
    teacher = _states(dense, images)
    vit = check_vit(pruned)
    if any(merge_schedule(vit)):
        raise ValueError("lsq_rescale needs a model that does not merge tokens")
    rows: dict[str, list[tuple[float, float, bool]]] = {"attn": [], "mlp": []}
    with ExitStack() as stack:
        if masks is not None:
            stack.enter_context(masked(vit, masks))
        captured: list[torch.Tensor] = []
        hook = vit.blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            vit.forward_features(images.to(next(vit.parameters())))
        finally:
            hook.remove()
        x = captured[0]
        for layer, block in enumerate(vit.blocks):
            for part, norm, scale in (("attn", "norm1", "ls1"), ("mlp", "norm2", "ls2")):
                normed = block.get_submodule(norm)(x)
                units = _units(block, part, layer, masks)
                branch, gamma = block.get_submodule(part), block.get_submodule(scale)
                x, before, after, scaled = _rescale(
                    branch, gamma, units, normed, x, teacher[part][layer], damping
                )
                rows[part].append((before, after, scaled))
    return RecoveryReport(
        before={part: tuple(r[0] for r in v) for part, v in rows.items()},
        after={part: tuple(r[1] for r in v) for part, v in rows.items()},
        scaled={part: tuple(r[2] for r in v) for part, v in rows.items()},
    )
