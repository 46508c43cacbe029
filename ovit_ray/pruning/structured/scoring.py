"""OPTIN's trajectory importance of every attention head and MLP neuron (Khaki & Plataniotis, ICLR 2024):
how much the later layers' features and the logits move when that unit alone is masked. Label-free and
gradient-free: one calibration batch, forward passes only.

Score of unit j in block l: Σ_{z>l} MD(F'_z, F_z) + s·KD(logits', logits), where F_z is the `norm1` output
of block z and, last, the final `norm` output (so last-block units see the final embedding). MD compares the
cosine Gram matrices of one fixed, seeded subset of tokens per feature; KD is the sum-reduced
KL(teacher ‖ student) times T² (OPTIN's code does not divide the logits by T, and neither do we). OPTIN
rescales KD by a power of ten per candidate so that MD ≈ λ·s·KD; we pick one power of ten for all units from
the totals, so a unit's KD weight does not depend on its own MD. Higher scores mean more important.

Speed: each block's input is cached from one teacher pass, so a candidate in block l runs blocks >= l only,
and `candidates_per_pass` candidates share a pass, each replica of the batch with its own mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .units import block_widths, check_vit, replica_masks

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
        """MD and KD losses (R,) with each of `units` of `layer` masked alone, all in one pass."""
        replicas = len(units)
        keep = torch.ones(replicas, width, dtype=torch.bool)
        keep[torch.arange(replicas), units] = False
        handle = replica_masks(self.blocks[layer], kind, keep)
        try:
            return self.replay(layer, replicas)
        finally:
            handle.remove()

    def replay(self, layer: int, replicas: int) -> tuple[torch.Tensor, torch.Tensor]:
        """MD and KD losses (R,) of R replicas of the batch run from block `layer` on, under whatever edit the
        caller has put in place (masking hooks here; depth pruning's dropped or linearised sublayers)."""
        x = self.inputs[layer].repeat(replicas, 1, 1)
        shape = (replicas, *self.inputs[layer].shape)
        md = x.new_zeros(replicas, dtype=torch.float64)
        for z in range(layer, len(self.blocks)):
            if z > layer:
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


@torch.no_grad()
def optin_scores(model: nn.Module, images: torch.Tensor, settings: OptinSettings | None = None) -> UnitScores:
    """Score every head and neuron of a dense timm ViT on one calibration batch (deterministic for a seed)."""
    settings = settings or OptinSettings()
    vit = check_vit(model)
    was_training = vit.training
    vit.eval()
    try:
        teacher = TrajectoryLosses(vit, images, settings)
        param = next(vit.parameters())
        widths = dict(zip(("heads", "neurons"), block_widths(vit), strict=True))
        md: dict[str, list[torch.Tensor]] = {"heads": [], "neurons": []}
        kd: dict[str, list[torch.Tensor]] = {"heads": [], "neurons": []}
        for kind in ("heads", "neurons"):
            for layer, width in enumerate(widths[kind]):
                parts = [  # none for a block without units of this kind (e.g. its attention dropped)
                    teacher.losses(layer, kind, units, width)
                    for units in torch.arange(width).split(settings.candidates_per_pass)
                    if len(units)
                ]
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
