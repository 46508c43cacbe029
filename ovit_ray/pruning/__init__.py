"""Pruners: which weights, their masks, the Fisher from a model's gradients, and the pruning methods.

Names are resolved on first use (PEP 562), so `ovit_ray.pruning.names` and the method registry (the
choices the CLI lists in its help) are importable without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Accounting": "accounting",
    "count_params_and_flops": "accounting",
    "MaskSet": "masks",
    "DEFAULT_PATTERNS": "names",
    "get_method": "methods",
    "method_names": "methods",
    "PruningMethod": "methods",
    "register_method": "methods",
    "parse_pattern": "names",
    "select_prunable": "params",
    "Pruner": "pruner",
    "PruneSettings": "settings",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ovit_ray.pruning' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ovit_ray.pruning.{_WHERE[name]}"), name)
