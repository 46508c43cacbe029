"""Structured pruning jobs (heads, neurons, tokens): cached scores, then search, shrink, evaluate, time."""

from .cache import cached_scores, calibration_images
from .run import SpeedSettings, StructuredJob, speed_columns, structured_rows

__all__ = [
    "SpeedSettings",
    "StructuredJob",
    "cached_scores",
    "calibration_images",
    "speed_columns",
    "structured_rows",
]
