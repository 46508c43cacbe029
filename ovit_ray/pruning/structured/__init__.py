"""Structured pruning of timm ViTs (issues 15, 25): heads and MLP neurons scored by OPTIN's label-free
trajectory importance or a standard baseline (group L1/L2 magnitude, first-order Taylor, random), a mask search
under a MAC budget (widths optionally rounded, part of the saving optionally from merged tokens) or a latency
budget from measured tables, the physical shrink that makes the model faster, PTF-style least-squares
rescaling, and ToMe-style token merging."""

from .baselines import group_norm_scores, random_scores, taylor_scores
from .costs import VitCosts, Widths
from .latency import LatencyResult, LatencyTable, PiecewiseLinear, measure_latency, search_latency
from .recovery import RecoveryReport, lsq_rescale
from .scorers import StructuredScorer, get_scorer
from .scoring import OptinSettings, TrajectoryLosses, UnitScores, optin_scores
from .search import MAX_TOKEN_SHARE, ROUNDINGS, SearchResult, search_flops, select_units
from .shrink import rebuild, shrink, shrink_block, shrunk_sizes
from .tokens import merge_schedule, merge_tokens, merged_tokens, merging, unmerge_tokens
from .units import ConstantBranch, UnitMasks, block_widths, check_vit, masked

__all__ = [
    "MAX_TOKEN_SHARE",
    "ROUNDINGS",
    "ConstantBranch",
    "LatencyResult",
    "LatencyTable",
    "OptinSettings",
    "PiecewiseLinear",
    "RecoveryReport",
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
    "group_norm_scores",
    "lsq_rescale",
    "masked",
    "measure_latency",
    "merge_schedule",
    "merge_tokens",
    "merged_tokens",
    "merging",
    "optin_scores",
    "random_scores",
    "rebuild",
    "search_flops",
    "search_latency",
    "select_units",
    "shrink",
    "shrink_block",
    "shrunk_sizes",
    "taylor_scores",
    "unmerge_tokens",
]
