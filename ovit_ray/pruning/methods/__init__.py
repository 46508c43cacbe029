"""Pruning methods as plug-ins, one module each, registered by name like timm's models.

A new method is one module in this package with a `@register_method` subclass of `PruningMethod`, plus
its name in `_BUILT_IN` below (their order is the CLI's default order). A method defined elsewhere is
registered when its module is imported, in every process that prunes with it. Method modules import
torch only inside their functions, so listing the names stays fast.
"""

from __future__ import annotations

import importlib

from ovit_ray.pruning.methods._registry import get_method, method_names, register_method
from ovit_ray.pruning.methods.base import PruningMethod, TensorPlan

__all__ = ["PruningMethod", "TensorPlan", "get_method", "method_names", "register_method"]

_BUILT_IN = ("ovit", "woodfisher", "magnitude", "ovit_noupdate")
for _module in _BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
