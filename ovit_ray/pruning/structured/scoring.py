"""OPTIN's trajectory importance of every attention head and MLP neuron (Khaki & Plataniotis, ICLR 2024):
how much the later layers' features and the logits move when that unit alone is masked. Label-free and
gradient-free: one calibration batch, forward passes only.

Score of unit j in block l: Σ_{z>l} MD(F'_z, F_z) + s·KD(logits', logits), where F_z is the `norm1` output
of block z and, last, the final `norm` output (so last-block units see the final embedding). MD compares the
cosine Gram matrices of one fixed, seeded subset of tokens per feature; KD is the sum-reduced
KL(teacher ‖ student) times T² (OPTIN's code does not divide the logits by T, and neither do we). OPTIN
rescales KD by a power of ten per candidate so that MD ≈ λ·s·KD; we pick one power of ten for all units from
the totals, so a unit's KD weight does not depend on its own MD. Higher scores mean more important.

Speed (docs/STRUCTURED.md): one teacher pass caches each block's input; `candidates_per_pass` candidates share
a pass, each replica of the batch with its own unit masked; and block l itself is never re-run for its own
candidates (structured_pruning.md §2.5 (c)). Masking neuron j changes block l's output by the rank-one term
-ls2(a_j ⊗ fc2[:, j]), a_j its activation on every token; masking head h changes the stream after attention by
-ls1(o_h · proj[:, h]ᵀ), o_h its attention output, after which only block l's MLP runs again. Both terms come
from block l's teacher internals, recorded once per block, so a candidate in block l runs blocks > l only
(the same sums as masking, to rounding: `masked_losses` is the masked pass, kept as the reference and for
blocks that are not timm's pre-norm `Block`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from timm.models.vision_transformer import Block
from torch import nn

from .units import attention_of, block_widths, check_vit, mlp_of, replica_masks

__all__ = ["OptinSettings", "TrajectoryLosses", "UnitScores", "optin_scores"]


@dataclass(frozen=True)
class OptinSettings:
    """OPTIN's knobs (defaults: its DeiT-S ImageNet config) plus how many candidates share a pass."""

    lam: float = 100.0  # `lambda_contribution`: KD gets about 1/lam of MD's weight
    temperature: float = 4.0
    gram_tokens: int = 768  # K: tokens in each Gram matrix (all tokens when the batch has fewer)
    last_layer_neuron_decay: float = 1e-4  # last-block neurons score almost zero, so they go first
    head_decay: float = 1.0
    candidates_per_pass: int = 32
    seed: int = 0  # draws the Gram token subsets

    def __post_init__(self) -> None:
        if self.lam <= 0 or self.temperature <= 0 or self.gram_tokens < 2 or self.candidates_per_pass < 1:
            raise ValueError(f"invalid OPTIN settings: {self}")


@dataclass(frozen=True)
class UnitScores:
    """Importance per block: `heads[l]` (H_l,) and `neurons[l]` (h_l,), with the raw MD and KD terms."""

    heads: tuple[torch.Tensor, ...]
    neurons: tuple[torch.Tensor, ...]
    md: dict[str, tuple[torch.Tensor, ...]]
    kd: dict[str, tuple[torch.Tensor, ...]]
    kd_scale: float


@dataclass(frozen=True)
class _BlockInternals:
    """What the dense block computes on the cached batch: the stream after attention (`mid`, what `norm2`
    takes), the heads' outputs (what `attn.proj` takes; None without heads), the neurons' activations (what
    `mlp.fc2` takes; None without neurons) and the block's output."""

    mid: torch.Tensor
    heads: torch.Tensor | None
    neurons: torch.Tensor | None
    out: torch.Tensor


class TrajectoryLosses:
    """The dense model's cached block inputs, Gram matrices and log-probabilities on the calibration batch;
    `losses` scores any chunk of one block's units (what `optin_scores` loops over, and what a caller that
    spreads the blocks over workers or times one chunk needs). Call it under `torch.no_grad()`, model in eval."""

    def __init__(self, model: nn.Module, images: torch.Tensor, settings: OptinSettings) -> None:
        vit = check_vit(model)
        self.vit, self.settings = vit, settings
        param = next(vit.parameters())
        images = images.to(device=param.device, dtype=param.dtype)
        self.blocks = list(vit.blocks)
        self.norms = [block.get_submodule("norm1") for block in self.blocks]
        captured: list[torch.Tensor] = []
        handle = self.blocks[0].register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            vit.forward_features(images)
        finally:
            handle.remove()
        x = captured[0]
        self.inputs: list[torch.Tensor] = []
        features = []
        for block, norm in zip(self.blocks, self.norms, strict=True):
            self.inputs.append(x)
            features.append(norm(x))
            x = block(x)
        features.append(vit.norm(x))
        self.logp = torch.log_softmax(vit.forward_head(features[-1]), dim=-1)
        generator = torch.Generator().manual_seed(settings.seed)
        tokens = x.shape[0] * x.shape[1]
        self.subsets = [
            torch.randperm(tokens, generator=generator)[: settings.gram_tokens].to(x.device) for _ in features
        ]
        self.teacher = [self._tokens(f[None], z)[0] for z, f in enumerate(features)]
        self.reference = [
            t @ t.T if self._direct(t) else (t.T @ t).square().sum() for t in self.teacher
        ]  # the teacher's Gram matrix, or its squared norm for the d x d form of `_md`
        self._internals: tuple[int, _BlockInternals] | None = None  # the last block's, reused by its chunks

    def _tokens(self, features: torch.Tensor, z: int) -> torch.Tensor:
        """Feature z's token subset, L2-normalised per token, in float64 (R, K, d) for R replicas (R, B, N, d)."""
        return nn.functional.normalize(features.flatten(1, 2)[:, self.subsets[z]].double(), dim=-1)

    @staticmethod
    def _direct(tokens: torch.Tensor) -> bool:
        """Whether the K x K Gram matrices are smaller than the d x d ones (K <= d)."""
        return tokens.shape[-2] <= tokens.shape[-1]

    def losses(
        self, layer: int, kind: str, units: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MD and KD losses (R,) with each of `units` of `layer` masked alone, all in one pass that starts after
        block `layer` (its output under each mask is the teacher's less that unit's share; module docstring)."""
        block = self.blocks[layer]
        if type(block) is not Block:  # a subclass or another layout may compose its branches otherwise
            return self.masked_losses(layer, kind, units, width)
        inside = self._block_internals(layer)
        if kind == "heads" and inside.heads is not None:
            attn = attention_of(block)
            assert attn is not None
            out = inside.heads.unflatten(-1, (attn.num_heads, attn.head_dim))[..., units, :]  # (B, N, R, dh)
            proj = attn.proj.weight.unflatten(1, (attn.num_heads, attn.head_dim))[:, units]  # (d, R, dh)
            share = torch.einsum("bnrk,drk->rbnd", out, proj)
            mid = (inside.mid - block.drop_path1(block.ls1(share))).flatten(0, 1)
            x = mid + block.drop_path2(block.ls2(block.mlp(block.norm2(mid))))
        elif kind == "neurons" and inside.neurons is not None:
            parts = mlp_of(block)
            assert parts is not None
            acts = inside.neurons[..., units].movedim(-1, 0)[..., None]  # (R, B, N, 1)
            share = acts * parts[2].weight.T[units][:, None, None]  # (R, B, N, d)
            x = (inside.out - block.drop_path2(block.ls2(share))).flatten(0, 1)
        else:
            raise ValueError(f"no {kind!r} to mask in block {layer} (kinds: 'heads', 'neurons')")
        return self._trajectory(x, layer + 1, len(units))

    def masked_losses(
        self, layer: int, kind: str, units: torch.Tensor, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`losses` by masking each unit in block `layer` and running that block again (the reference pass)."""
        replicas = len(units)
        keep = torch.ones(replicas, width, dtype=torch.bool)
        keep[torch.arange(replicas), units] = False
        handle = replica_masks(self.blocks[layer], kind, keep)
        try:
            return self.replay(layer, replicas)
        finally:
            handle.remove()

    def _block_internals(self, layer: int) -> _BlockInternals:
        """Block `layer`'s internals on the cached batch, recorded by one dense pass (kept for the next call)."""
        if self._internals is not None and self._internals[0] == layer:
            return self._internals[1]
        block = self.blocks[layer]
        attn, mlp = attention_of(block), mlp_of(block)
        seen: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
            return lambda _, args: seen.__setitem__(name, args[0])

        watched = [("mid", block.get_submodule("norm2"))]
        watched += [("heads", attn.proj)] if attn is not None else []
        watched += [("neurons", mlp[2])] if mlp is not None else []
        handles = [module.register_forward_pre_hook(keep(name)) for name, module in watched]
        try:
            out = block(self.inputs[layer])
        finally:
            for handle in handles:
                handle.remove()
        inside = _BlockInternals(seen["mid"], seen.get("heads"), seen.get("neurons"), out)
        self._internals = (layer, inside)
        return inside

    def replay(self, layer: int, replicas: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MD and KD losses (R,) of R replicas of the batch run from block `layer` on, under whatever edit the
        caller has put in place (masking hooks here; depth pruning's dropped or linearised sublayers)."""
        x = self.blocks[layer](self.inputs[layer].repeat(replicas, 1, 1))
        return self._trajectory(x, layer + 1, replicas)

    def _trajectory(self, x: torch.Tensor, start: int, replicas: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MD and KD losses (R,) of the R replicas `x` (R·B, N, d) entering block `start`: MD of every later
        `norm1` feature and the final norm, KD of the logits."""
        shape = (replicas, *self.inputs[0].shape)
        md = x.new_zeros(replicas, dtype=torch.float64)
        for z in range(start, len(self.blocks)):
            md += self._md(self.norms[z](x), z, shape)
            x = self.blocks[z](x)
        final = self.vit.norm(x)
        md += self._md(final, len(self.blocks), shape)
        logp = torch.log_softmax(self.vit.forward_head(final), dim=-1).reshape(replicas, *self.logp.shape)
        kd = (self.logp.exp() * (self.logp - logp)).sum(dim=(1, 2)) * self.settings.temperature**2
        return md, kd.double()

    def _md(self, features: torch.Tensor, z: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Σ (G' - G)² per replica. With K > d the same sum comes from d x d products (float64 keeps the
        cancellation harmless): ||A Aᵀ - B Bᵀ||² = ||Aᵀ A||² - 2 ||Bᵀ A||² + ||Bᵀ B||²."""
        a, b = self._tokens(features.reshape(shape), z), self.teacher[z]
        if self._direct(b):
            return ((a @ a.transpose(1, 2) - self.reference[z]) ** 2).sum(dim=(1, 2))
        cross = (b.T @ a).square().sum(dim=(1, 2))
        return (a.transpose(1, 2) @ a).square().sum(dim=(1, 2)) - 2 * cross + self.reference[z]


def _power_of_ten(md: torch.Tensor, kd: torch.Tensor, lam: float) -> float:
    """The power of ten s with total MD ≈ lam · s · total KD (1 when either total is zero)."""
    total_md, total_kd = float(md.sum()), float(kd.sum())
    if total_md <= 0 or total_kd <= 0:
        return 1.0
    return 10.0 ** round(math.log10(total_md / (lam * total_kd)))


def _progress(show: bool | None) -> Progress:
    """A bar with ETA on stderr: shown when `show`, or (None) when stderr is a terminal; gone when done."""
    enabled = sys.stderr.isatty() if show is None else show
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True, force_terminal=True if show else None),
        disable=not enabled,
        transient=True,
    )


@torch.no_grad()
def optin_scores(
    model: nn.Module,
    images: torch.Tensor,
    settings: OptinSettings | None = None,
    *,
    progress: bool | None = None,
) -> UnitScores:
    """Score every head and neuron of a dense timm ViT on one calibration batch (deterministic for a seed).
    `progress`: a bar with ETA on stderr (None: when stderr is a terminal); the scores do not depend on it."""
    settings = settings or OptinSettings()
    vit = check_vit(model)
    was_training = vit.training
    vit.eval()
    md: dict[str, list[torch.Tensor]] = {"heads": [], "neurons": []}
    kd: dict[str, list[torch.Tensor]] = {"heads": [], "neurons": []}
    widths = dict(zip(("heads", "neurons"), block_widths(vit), strict=True))
    depth = len(widths["heads"])
    # a candidate of block l runs the blocks after it (and block l's MLP for a head): the bar counts blocks
    work = sum(
        (depth - layer) * (widths["heads"][layer] + widths["neurons"][layer]) for layer in range(depth)
    )
    try:
        with _progress(progress) as bar:
            task = bar.add_task(
                f"OPTIN scores of {sum(widths['heads'] + widths['neurons'])} units", total=work
            )
            teacher = TrajectoryLosses(vit, images, settings)
            param = next(vit.parameters())
            for layer in range(depth):
                for kind in ("heads", "neurons"):
                    parts = []  # none for a block without units of this kind (e.g. its attention dropped)
                    for units in torch.arange(widths[kind][layer]).split(settings.candidates_per_pass):
                        if len(units):
                            parts.append(teacher.losses(layer, kind, units, widths[kind][layer]))
                            bar.advance(task, (depth - layer) * len(units))
                    md[kind].append(torch.cat([p[0] for p in parts]) if parts else param.new_zeros(0))
                    kd[kind].append(torch.cat([p[1] for p in parts]) if parts else param.new_zeros(0))
    finally:
        vit.train(was_training)
    every_md = torch.cat(md["heads"] + md["neurons"])
    scale = _power_of_ten(every_md, torch.cat(kd["heads"] + kd["neurons"]), settings.lam)
    heads = tuple(
        settings.head_decay * (m + scale * k) for m, k in zip(md["heads"], kd["heads"], strict=True)
    )
    neurons = [m + scale * k for m, k in zip(md["neurons"], kd["neurons"], strict=True)]
    neurons[-1] = neurons[-1] * settings.last_layer_neuron_decay
    return UnitScores(
        heads=heads,
        neurons=tuple(neurons),
        md={kind: tuple(v) for kind, v in md.items()},
        kd={kind: tuple(v) for kind, v in kd.items()},
        kd_scale=scale,
    )
