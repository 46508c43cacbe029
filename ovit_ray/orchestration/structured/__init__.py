"""Structured-pruning sweeps: a grid of budgets x methods x seeds, scored once, each point a Tune trial."""
