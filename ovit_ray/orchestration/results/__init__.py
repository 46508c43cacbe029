"""Parquet result files (one schema family for every kind), the report table, statistics and plots."""

# The files of every output folder; which kind of experiment wrote them is recorded in their schema's
# metadata (`schemas.EXPERIMENT_KEY`). No import here is heavy.
RESULTS_FILE = "results.parquet"
TRIALS_FILE = "trials.parquet"
