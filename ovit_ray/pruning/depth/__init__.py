"""Depth pruning of timm ViTs after BoundaryDPT (issue 16): whole attention sublayers dropped, MLP activations
annealed to the identity and the linearised MLPs merged into one d x d Linear.

BoundaryDPT has no public code or paper body; what follows is our reconstruction (docs: structured_pruning.md
sections 5 and 6).
"""

from .costs import DepthCosts
from .edits import (
    AnnealedActivation,
    anneal_activation,
    annealed_activations,
    drop_attention,
    is_linearised,
    merge_mlp,
    set_activation_mix,
)
from .scores import DepthScores, DepthScoreSettings, depth_scores
from .structure import depth_structure, rebuild_depth

__all__ = [
    "AnnealedActivation",
    "DepthCosts",
    "DepthScoreSettings",
    "DepthScores",
    "anneal_activation",
    "annealed_activations",
    "depth_scores",
    "depth_structure",
    "drop_attention",
    "is_linearised",
    "merge_mlp",
    "rebuild_depth",
    "set_activation_mix",
]
