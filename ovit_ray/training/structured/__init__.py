"""Structured pruning jobs (heads, neurons, tokens): cached scores, then search, shrink, evaluate, time."""

from .cache import cached_scores, calibration_batch, calibration_images
from .run import StructuredJob, structured_rows
from .speed import SpeedSettings, speed_columns

__all__ = [
    "SpeedSettings",
    "StructuredJob",
    "cached_scores",
    "calibration_batch",
    "calibration_images",
    "speed_columns",
    "structured_rows",
]
