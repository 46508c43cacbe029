"""Structured pruning of timm ViTs (issue 15): heads and MLP neurons scored by OPTIN's label-free trajectory
importance, a mask search under a MAC budget (widths optionally rounded, part of the saving optionally from
merged tokens), the physical shrink that makes the model faster, and ToMe-style token merging."""

from .costs import VitCosts, Widths
from .scorers import StructuredScorer, get_scorer
from .scoring import OptinSettings, TrajectoryLosses, UnitScores, optin_scores
from .search import MAX_TOKEN_SHARE, ROUNDINGS, SearchResult, search_flops, select_units
from .shrink import rebuild, shrink, shrunk_sizes
from .tokens import merge_schedule, merge_tokens, merged_tokens, merging, unmerge_tokens
from .units import ConstantBranch, UnitMasks, block_widths, check_vit, masked

__all__ = [
    "MAX_TOKEN_SHARE",
    "ROUNDINGS",
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
    "merge_schedule",
    "merge_tokens",
    "merged_tokens",
    "merging",
    "optin_scores",
    "rebuild",
    "search_flops",
    "select_units",
    "shrink",
    "shrunk_sizes",
    "unmerge_tokens",
]
