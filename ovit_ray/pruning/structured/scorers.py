"""Structured pruning methods as plug-ins: each one only scores heads and MLP neurons; the budget search,
the shrink and the measurement are shared, so two methods differ in their score and nothing else.

The names live torch-free in `ovit_ray.pruning.names.STRUCTURED_METHODS` (what `--help` lists); every name
there has a scorer here, checked at import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ovit_ray.pruning.names import STRUCTURED_METHODS

from .scoring import OptinSettings, UnitScores, optin_scores
from .units import attention_of, check_vit, mlp_of

__all__ = ["StructuredScorer", "get_scorer"]


class StructuredScorer(ABC):
    """Importance of every head and neuron of a dense ViT (higher = keep); `images` is the calibration batch."""

    name: ClassVar[str]

    @abstractmethod
    def score(self, model: nn.Module, images: torch.Tensor, settings: OptinSettings) -> UnitScores:
        """Scores per block; deterministic for `settings.seed`."""


class _Optin(StructuredScorer):
    name = "optin"

    def score(self, model: nn.Module, images: torch.Tensor, settings: OptinSettings) -> UnitScores:
        return optin_scores(model, images, settings)


class _Magnitude(StructuredScorer):
    """L2 norm of the weights a unit owns: a head's qkv rows and proj columns, a neuron's fc1 row and fc2
    column. Data-free; the baseline that shares OPTIN's search, shrink and budgets."""

    name = "structured-magnitude"

    def score(self, model: nn.Module, images: torch.Tensor, settings: OptinSettings) -> UnitScores:
        heads, neurons = [], []
        with torch.no_grad():
            for block in check_vit(model).blocks:
                attn, mlp = attention_of(block), mlp_of(block)
                if attn is None:
                    heads.append(torch.zeros(0))
                else:
                    qkv = attn.qkv.weight.detach().double().reshape(3, attn.num_heads, attn.head_dim, -1)
                    proj = attn.proj.weight.detach().double().reshape(-1, attn.num_heads, attn.head_dim)
                    heads.append((qkv.square().sum((0, 2, 3)) + proj.square().sum((0, 2))).sqrt())
                if mlp is None:
                    neurons.append(torch.zeros(0))
                else:
                    _, fc1, fc2 = mlp
                    w1, w2 = fc1.weight.detach().double(), fc2.weight.detach().double()
                    neurons.append((w1.square().sum(1) + w2.square().sum(0)).sqrt())
        return UnitScores(heads=tuple(heads), neurons=tuple(neurons), md={}, kd={}, kd_scale=1.0)


_SCORERS: dict[str, type[StructuredScorer]] = {cls.name: cls for cls in (_Optin, _Magnitude)}
if tuple(_SCORERS) != STRUCTURED_METHODS:
    raise ImportError(f"structured scorers {tuple(_SCORERS)} differ from the names {STRUCTURED_METHODS}")


def get_scorer(name: str) -> StructuredScorer:
    """The scorer registered as `name`, or a ValueError listing the names."""
    if name not in _SCORERS:
        raise ValueError(f"unknown structured method {name!r}; choose from {', '.join(_SCORERS)}")
    return _SCORERS[name]()
