"""Model registry (presets + timm), checkpoint files and the cache directory."""

from .checkpoint import SUFFIXES, cache_dir, load_checkpoint, save_checkpoint
from .registry import PRESETS, PresetSpec, UnknownModelError, create_model, timm_spec

__all__ = [
    "PRESETS",
    "SUFFIXES",
    "PresetSpec",
    "UnknownModelError",
    "cache_dir",
    "create_model",
    "load_checkpoint",
    "save_checkpoint",
    "timm_spec",
]
