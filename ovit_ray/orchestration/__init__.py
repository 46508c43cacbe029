"""Orchestration layer: Ray Train jobs, Ray Tune sweeps, MLflow tracking, Parquet results, reports."""

import os

# Ray reads this once, at import: set before any module of this layer imports ray, so a local instance
# reports 127.0.0.1 instead of the machine's outward address (scripts and the CLI alike).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
