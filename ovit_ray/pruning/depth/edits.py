"""The structural edits of depth pruning on one timm ViT `Block` (dense or `shrink()`-ed), in place.

- `drop_attention`: the attention branch becomes a `ConstantBranch`, so the block computes x + ls1(bias) +
  mlp-branch. Keeping `proj.bias` makes the drop equal to masking every head (what OPTIN's masked forward
  and `shrink` do); without it the branch adds nothing.
- `anneal_activation`: `mlp.act` becomes `AnnealedActivation`, a·act(x) + (1 − a)·x, whose `a` a schedule drives
  from 1 (the original activation) to 0 (exactly the identity).
- `merge_mlp`: a linearised MLP is the affine map x ↦ W2 (W1 x + b1) + b2; with `norm2`'s affine (γ, β) folded
  in it becomes one d x d Linear, W = W2 W1 diag(γ), b = W2 (W1 β + b1) + b2, behind an affine-free `norm2`.
  When the hidden width h is below d/2 the two thin GEMMs (2·N·d·h MACs) are cheaper than one d x d
  (N·d² MACs): the MLP keeps them with an Identity activation, and γ, β are folded into `fc1` alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ovit_ray.pruning.structured.units import ConstantBranch, attention_of, mlp_of

__all__ = [
    "AnnealedActivation",
    "affine_free_norm2",
    "anneal_activation",
    "annealed_activations",
    "attention_constant",
    "drop_attention",
    "is_linearised",
    "merge_mlp",
    "set_activation_mix",
]


class AnnealedActivation(nn.Module):
    """a·act(x) + (1 − a)·x around the MLP's own activation. `a` is a plain float (no device sync per step)
    saved in the state_dict as extra state, so a checkpoint taken mid-schedule resumes at the same mix.
    At a = 1 and a = 0 it returns act(x) and x themselves (exactly the original, exactly linear)."""

    def __init__(self, act: nn.Module, a: float = 1.0) -> None:
        super().__init__()
        self.act = act
        self.a = float(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.a == 0.0:
            return x
        if self.a == 1.0:
            return self.act(x)
        return self.a * self.act(x) + (1.0 - self.a) * x

    def get_extra_state(self) -> dict[str, Any]:
        return {"a": self.a}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.a = float(state["a"])

    def extra_repr(self) -> str:
        return f"a={self.a}"


def attention_constant(block: nn.Module, keep_bias: bool = True) -> ConstantBranch:
    """What the block's attention becomes when dropped: its `proj.bias` (keep_bias) or nothing, as a branch."""
    attn = attention_of(block)
    if attn is None:
        raise ValueError("this block's attention is already a constant branch")
    return ConstantBranch(attn.proj.bias if keep_bias else None, attn.proj.out_features)


def drop_attention(block: nn.Module, keep_bias: bool = True) -> None:
    """Replace the block's attention by its constant `ls1`-input: `proj.bias` (keep_bias) or nothing."""
    if attention_of(block) is not None:
        block.attn = attention_constant(block, keep_bias)
    elif not keep_bias and isinstance(current := block.get_submodule("attn"), ConstantBranch):
        block.attn = ConstantBranch(None, current.width)  # already constant: now without its bias


def anneal_activation(block: nn.Module, a: float = 1.0) -> AnnealedActivation:
    """Wrap the MLP's activation (once) and set its mix to `a`; returns the wrapper a schedule drives."""
    parts = mlp_of(block)
    if parts is None:
        raise ValueError("this block's MLP has no neurons left, so no activation to anneal")
    mlp = parts[0]
    if not isinstance(mlp.act, AnnealedActivation):
        mlp.act = AnnealedActivation(mlp.act)
    mlp.act.a = float(a)
    return mlp.act


def annealed_activations(model: nn.Module) -> list[AnnealedActivation]:
    """Every `AnnealedActivation` of the model, in block order."""
    return [m for m in model.modules() if isinstance(m, AnnealedActivation)]


def set_activation_mix(model: nn.Module, a: float) -> None:
    """Set every annealed activation of the model to mix `a` (what a stage-2 schedule calls per step)."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"the activation mix a must lie in [0, 1], got {a}")
    for act in annealed_activations(model):
        act.a = float(a)


def is_linearised(block: nn.Module) -> bool:
    """Whether the block's MLP is an affine map: merged, an Identity activation, or annealed to a = 0."""
    mlp = block.mlp
    if isinstance(mlp, nn.Linear):
        return True
    act = getattr(mlp, "act", None)
    return isinstance(act, nn.Identity) or (isinstance(act, AnnealedActivation) and act.a == 0.0)


def _fold_norm2(block: nn.Module, fc1: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """`fc1`'s weight and bias (float64) with `norm2`'s affine folded in; `norm2` becomes affine-free."""
    norm = block.get_submodule("norm2")
    if not isinstance(norm, nn.LayerNorm) or len(norm.normalized_shape) != 1:
        raise ValueError(f"norm2 {type(norm).__name__} is not a LayerNorm over the last dimension")
    weight = fc1.weight.detach().double()
    bias = fc1.bias.detach().double() if fc1.bias is not None else weight.new_zeros(weight.shape[0])
    if norm.bias is not None:
        bias = bias + weight @ norm.bias.detach().double()
    if norm.weight is not None:
        weight = weight * norm.weight.detach().double()
    affine_free_norm2(block)
    return weight, bias


def affine_free_norm2(block: nn.Module) -> None:
    """Replace `norm2` by the same LayerNorm without gamma and beta (what a linearised MLP absorbed)."""
    norm = block.get_submodule("norm2")
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"norm2 {type(norm).__name__} is not a LayerNorm")
    block.norm2 = nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)


def _linear(weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> nn.Linear:
    """A Linear holding `weight` and `bias` cast to `dtype`."""
    out = nn.Linear(weight.shape[1], weight.shape[0], device=weight.device, dtype=dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def merge_mlp(block: nn.Module) -> bool:
    """Fold a linearised MLP (and `norm2`'s affine) into one d x d Linear, or, when its hidden width is below
    d/2, keep `fc1`/`fc2` with an Identity activation and `norm2`'s affine folded into `fc1`. Returns whether
    it merged. Exact up to rounding: the merge is done in float64 and cast back."""
    parts = mlp_of(block)
    if parts is None or not is_linearised(block):
        raise ValueError("only an MLP whose activation is linear (annealed to a = 0) can be merged")
    mlp, fc1, fc2 = parts
    w1, b1 = _fold_norm2(block, fc1)
    if 2 * fc1.out_features < fc1.in_features:
        mlp.fc1, mlp.act = _linear(w1, b1, fc1.weight.dtype), nn.Identity()
        return False
    w2 = fc2.weight.detach().double()
    b2 = fc2.bias.detach().double() if fc2.bias is not None else w2.new_zeros(w2.shape[0])
    block.mlp = _linear(w2 @ w1, w2 @ b1 + b2, fc2.weight.dtype)
    return True
