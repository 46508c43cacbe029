"""Pruners: which weights, their masks, the Fisher from a model's gradients, and the pruning methods."""

from ovit_ray.pruning.accounting import Accounting, count_params_and_flops
from ovit_ray.pruning.masks import MaskSet
from ovit_ray.pruning.params import DEFAULT_PATTERNS, select_prunable
from ovit_ray.pruning.pruner import Pruner
from ovit_ray.pruning.settings import METHODS, PruneSettings, parse_pattern

__all__ = [
    "DEFAULT_PATTERNS", "METHODS", "Accounting", "MaskSet", "PruneSettings", "Pruner",
    "count_params_and_flops", "parse_pattern", "select_prunable",
]
