"""Candidate scores for depth pruning: how much each attention sublayer and each MLP activation matters, one
score per block, lower = more removable. The two types are scored and ranked separately (BoundaryDPT's
"gradient disparity": their importances live on different scales), never in one list. [ours: BoundaryDPT
publishes no scorer; these follow LLM-Drop, OPTIN and first-order Taylor saliency]

Removing a candidate means: an attention sublayer becomes its constant branch (`ls1(proj.bias)` with
`keep_bias`, else nothing), which equals masking all its heads; an activation becomes the identity.

- `cosine` (LLM-Drop): 1 − cos(u, v) per token, averaged over every token of the calibration batch, where v is
  the residual stream right after the candidate's sublayer and u the same stream with the candidate removed.
  For attention in block l with input x: u = x, v = x + ls1(attn(norm1(x))) (the sublayer's input against its
  output plus residual). For the activation: with y the stream after attention, u = y + ls2(mlp_lin(norm2(y)))
  (the MLP with the identity for its activation), v = y + ls2(mlp(norm2(y))) (the block's output).
- `distill` (OPTIN's masked forward, `TrajectoryLosses.replay`): the candidate alone removed, MD of the later
  blocks' `norm1` features and the final norm + KD of the logits to the unedited model; `md` and `kd` hold the
  raw terms, and KD's power-of-ten weight is chosen per type from that type's totals, as OPTIN does globally.
- `taylor` (optional): a gate g per candidate and per image, 1 in the model, mixes the candidate's output with
  its removed form (attention: c + g·(out − c) with c its constant; activation: x + g·(act(x) − x)); the score
  is the mean over images of |g · ∂L/∂g| with L the cross-entropy to the model's own top-1 predictions. KD to
  its own soft logits would be label-free too but has zero gradient at g = 1, so the hard predictions stand in.

Blocks without a candidate of a type (attention already dropped, activation already linear or absent) score
+inf for that type. Deterministic for a seed: only MD's Gram token subsets are random (`OptinSettings.seed`).
Score the model before merging (a merged MLP has no activation to score and no timm Mlp to mask).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ovit_ray.pruning.structured.scoring import OptinSettings, TrajectoryLosses, _power_of_ten
from ovit_ray.pruning.structured.units import attention_of, check_vit, mlp_of

from .edits import attention_constant, is_linearised
from .structure import vit_blocks

__all__ = ["KINDS", "DepthScoreSettings", "DepthScores", "candidates", "depth_scores", "removed"]

KINDS = ("attention", "activation")


@dataclass(frozen=True)
class DepthScoreSettings:
    """Which scorers run and how: OPTIN's knobs for `distill`, whether a dropped attention keeps its bias."""

    optin: OptinSettings = field(default_factory=OptinSettings)
    keep_bias: bool = True
    taylor: bool = False


@dataclass(frozen=True)
class DepthScores:
    """Per type, per scorer ("cosine", "distill", "md", "kd", and "taylor" when asked), one score per block."""

    attention: dict[str, torch.Tensor]
    activation: dict[str, torch.Tensor]

    def of(self, kind: str) -> dict[str, torch.Tensor]:
        if kind not in KINDS:
            raise ValueError(f"unknown candidate type {kind!r} (types: {', '.join(KINDS)})")
        return self.attention if kind == "attention" else self.activation


def candidates(model: nn.Module, kind: str) -> list[bool]:
    """Per block, whether it has a candidate of `kind`: an attention with heads, or a non-linear activation."""
    blocks = vit_blocks(check_vit(model))
    if kind == "attention":
        return [attention_of(b) is not None for b in blocks]
    return [mlp_of(b) is not None and not is_linearised(b) for b in blocks]


@contextmanager
def removed(block: nn.Module, kind: str, keep_bias: bool = True) -> Iterator[None]:
    """The block with its attention (as a constant branch) or its activation (as the identity) removed for the
    duration of the `with` block (`keep_bias`: whether the constant branch adds `proj.bias`)."""
    owner, name = (block, "attn") if kind == "attention" else (block.get_submodule("mlp"), "act")
    original = owner.get_submodule(name)
    setattr(owner, name, attention_constant(block, keep_bias) if kind == "attention" else nn.Identity())
    try:
        yield
    finally:
        setattr(owner, name, original)


def _distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """1 − cos(u, v) per token, averaged over all tokens, in float64."""
    return (1 - nn.functional.cosine_similarity(u.double(), v.double(), dim=-1)).mean()


_BRANCHES = {"attn": ("norm1", "attn", "ls1", "drop_path1"), "mlp": ("norm2", "mlp", "ls2", "drop_path2")}


def _plus_branch(block: nn.Module, branch: str, x: torch.Tensor) -> torch.Tensor:
    """x plus one of the block's residual branches, composed as timm's `Block.forward` does."""
    h = x
    for name in _BRANCHES[branch]:
        h = block.get_submodule(name)(h)
    return x + h


def _cosine(vit: nn.Module, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The `cosine` scores of every candidate, from each block's cached input."""
    scores = {kind: torch.full((len(inputs),), torch.inf, dtype=torch.float64) for kind in KINDS}
    attn_ok, act_ok = candidates(vit, "attention"), candidates(vit, "activation")
    for layer, (block, x) in enumerate(zip(vit_blocks(vit), inputs, strict=True)):
        y = _plus_branch(block, "attn", x)
        if attn_ok[layer]:
            scores["attention"][layer] = _distance(x, y)
        if act_ok[layer]:
            out = _plus_branch(block, "mlp", y)
            with removed(block, "activation"):
                linear = _plus_branch(block, "mlp", y)
            scores["activation"][layer] = _distance(linear, out)
    return scores


def _distill(
    teacher: TrajectoryLosses, vit: nn.Module, settings: DepthScoreSettings
) -> dict[str, dict[str, torch.Tensor]]:
    """MD, KD and their weighted sum with each candidate removed alone, per type."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for kind in KINDS:
        ok = candidates(vit, kind)
        md = torch.full((len(ok),), torch.inf, dtype=torch.float64)
        kd = md.clone()
        for layer, block in enumerate(vit_blocks(vit)):
            if ok[layer]:
                with removed(block, kind, settings.keep_bias):
                    m, k = teacher.replay(layer, 1)
                md[layer], kd[layer] = m[0], k[0]
        finite = torch.isfinite(md)
        scale = _power_of_ten(md[finite], kd[finite], settings.optin.lam)
        out[kind] = {"md": md, "kd": kd, "distill": md + scale * kd}
    return out


def _gate_hooks(vit: nn.Module, gates: torch.Tensor, keep_bias: bool) -> list[RemovableHandle]:
    """Forward hooks mixing each candidate's output with its removed form by its per-image gate: row
    `k * depth + l` of `gates` for block l's candidate of type `KINDS[k]`."""

    def mixer(index: int, removed_form: nn.Module) -> Callable[..., torch.Tensor]:
        def hook(_: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            g = gates[index].to(device=out.device, dtype=out.dtype).reshape(-1, *([1] * (out.dim() - 1)))
            base = removed_form(args[0])
            return base + g * (out - base)

        return hook

    handles = []
    blocks = vit_blocks(vit)
    for row, kind in enumerate(KINDS):
        for layer, (block, ok) in enumerate(zip(blocks, candidates(vit, kind), strict=True)):
            index = row * len(blocks) + layer
            if ok and kind == "attention":
                attn = block.get_submodule("attn")
                handles.append(attn.register_forward_hook(mixer(index, attention_constant(block, keep_bias))))
            elif ok:
                act = block.get_submodule("mlp").get_submodule("act")
                handles.append(act.register_forward_hook(mixer(index, nn.Identity())))
    return handles


def _taylor(vit: nn.Module, images: torch.Tensor, settings: DepthScoreSettings) -> dict[str, torch.Tensor]:
    """|g · ∂L/∂g| per candidate, averaged over images, at g = 1 (see the module docstring)."""
    depth = len(vit_blocks(vit))
    with torch.no_grad():
        targets = vit(images).argmax(dim=-1)
    gates = torch.ones(2 * depth, images.shape[0], dtype=torch.float64, requires_grad=True)
    handles = _gate_hooks(vit, gates, settings.keep_bias)
    try:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(vit(images), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, gates)
    finally:
        for handle in handles:
            handle.remove()
    saliency = (gates.detach() * grad).abs().mean(dim=1)
    out = {}
    for kind, part in zip(KINDS, saliency.split(depth), strict=True):
        ok = torch.tensor(candidates(vit, kind))
        out[kind] = torch.where(ok, part, torch.inf)
    return out


def depth_scores(
    model: nn.Module, images: torch.Tensor, settings: DepthScoreSettings | None = None
) -> DepthScores:
    """Score every attention sublayer and MLP activation of a timm ViT (dense or shrunk, not merged) on one
    calibration batch; the model is left as it was."""
    settings = settings or DepthScoreSettings()
    vit = check_vit(model)
    was_training = vit.training
    vit.eval()
    try:
        with torch.no_grad():
            teacher = TrajectoryLosses(vit, images, settings.optin)
            cosine = _cosine(vit, teacher.inputs)
            scores = {
                kind: {"cosine": cosine[kind], **values}
                for kind, values in _distill(teacher, vit, settings).items()
            }
        if settings.taylor:
            param = next(vit.parameters())
            batch = images.to(device=param.device, dtype=param.dtype)
            for kind, values in _taylor(vit, batch, settings).items():
                scores[kind]["taylor"] = values
    finally:
        vit.train(was_training)
    return DepthScores(attention=scores["attention"], activation=scores["activation"])
