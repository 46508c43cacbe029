"""Structured pruning of timm ViTs (issue 15): heads and MLP neurons scored by OPTIN's label-free trajectory
importance, a mask search under a MAC budget, and the physical shrink that makes the model faster."""

from .costs import VitCosts, Widths
from .scorers import StructuredScorer, get_scorer
from .scoring import OptinSettings, TrajectoryLosses, UnitScores, optin_scores
from .search import SearchResult, search_flops
from .shrink import rebuild, shrink, shrunk_sizes
from .units import ConstantBranch, UnitMasks, block_widths, check_vit, masked

__all__ = [
    "ConstantBranch",
    "OptinSettings",
    "SearchResult",
    "StructuredScorer",
    "TrajectoryLosses",
    "UnitMasks",
    "UnitScores",
    "VitCosts",
    "Widths",
    "block_widths",
    "check_vit",
    "get_scorer",
    "masked",
    "optin_scores",
    "rebuild",
    "search_flops",
    "shrink",
    "shrunk_sizes",
]
