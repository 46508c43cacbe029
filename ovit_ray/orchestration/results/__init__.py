"""Parquet result files (one schema per kind), the report table, statistics and plots."""

# The results file of every output folder (sweep, train/compare-strategies, prune, transfer); which kind
# of rows it holds is recorded in its schema's metadata (`schemas.KIND_KEY`). No import here is heavy.
RESULTS_FILE = "results.parquet"
