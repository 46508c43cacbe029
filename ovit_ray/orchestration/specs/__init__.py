"""Validated settings: one run's spec, sweep files and search spaces, knob labels (no Ray, no MLflow)."""
