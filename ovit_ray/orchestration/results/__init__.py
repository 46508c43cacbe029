"""Parquet result files (one schema per kind), the report table, statistics and plots."""
