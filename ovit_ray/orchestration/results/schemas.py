"""The Parquet file kinds ovit-ray writes, one explicit pyarrow schema each, all defined here.

Why explicit: a column inferred from its first values is typed ``null`` when they are all None, and a
null-typed column in one sweep's file makes two sweeps' files fail to concatenate (polars, duckdb,
``pyarrow.dataset``). Here every column has its type from the start; lists are Arrow lists (never JSON
text); durations and compute carry their unit in the name (``_seconds``, ``_hours``, ``_mb``).

To add a column: add a field to the schema of the file kind that writes it (``append_rows`` refuses
columns the schema lacks, and older files get the new column as nulls when next written).
"""

from __future__ import annotations

import pyarrow as pa

KIND_KEY = b"ovit_ray.file_kind"


def _fields(*pairs: tuple[str, pa.DataType]) -> list[pa.Field]:
    return [pa.field(name, kind) for name, kind in pairs]


def _same(kind: pa.DataType, *names: str) -> list[pa.Field]:
    """Fields of one type, in order: a long schema reads as groups."""
    return [pa.field(name, kind) for name in names]


def _schema(kind: str, *groups: list[pa.Field]) -> pa.Schema:
    return pa.schema([f for group in groups for f in group], metadata={KIND_KEY: kind.encode()})


STR, INT, FLOAT = pa.string(), pa.int64(), pa.float64()

# Every value of one gradual run: the fields of `training.spec.RunSpec` (`specs.run.GradualConfig`) except where results go
# (tests/test_schemas.py keeps the two lists equal).
GRADUAL_KNOBS = _fields(
    ("model", STR),
    ("checkpoint", STR),
    ("dataset", STR),
    ("data_root", STR),
    ("split_seed", INT),
    ("method", STR),
    ("block_size", INT),
    ("num_grads", INT),
    ("damp", FLOAT),
    ("grad_batch_size", INT),
    ("pattern", STR),
    ("scope", STR),
    ("patterns", pa.list_(STR)),
    ("dtype", STR),
    ("fisher_dtype", STR),
    ("init_sparsity", FLOAT),
    ("final_sparsity", FLOAT),
    ("start_epoch", INT),
    ("end_epoch", INT),
    ("update_frequency", INT),
    ("interpolation", STR),
    ("targets", pa.list_(FLOAT)),
    ("window_epochs", INT),
    ("steps_per_target", INT),
    ("lr_schedule", STR),
    ("lr_max", FLOAT),
    ("lr_min", FLOAT),
    ("warmup_epochs", INT),
    ("batch_size", INT),
    ("eval_batch_size", INT),
    ("max_steps_per_epoch", INT),
    ("weight_decay", FLOAT),
    ("label_smoothing", FLOAT),
    ("augment", STR),
    ("distill_weight", FLOAT),
    ("distill_temperature", FLOAT),
    ("distill_teacher", STR),
    ("seed", INT),
    ("workers", INT),
    ("cpus_per_worker", FLOAT),
    ("gpus_per_worker", FLOAT),
)

# One target of a gradual run: its best epoch inside the target's fine-tune window.
TARGET_RESULT = _fields(
    ("target_sparsity", FLOAT),
    ("achieved_sparsity", FLOAT),
    ("top1", FLOAT),
    ("val_top1", FLOAT),
    ("best_epoch", INT),
    ("epochs", INT),
    ("cpu_hours", FLOAT),
    ("gpu_hours", FLOAT),
    ("best_checkpoint", STR),
)

# `ovit-ray prune`: one row per (method, sparsity).
PRUNE_RESULTS = _schema(
    "prune_results",
    _fields(
        ("method", STR),
        ("pattern", STR),
        ("scope", STR),
        ("target_sparsity", FLOAT),
        ("achieved_sparsity", FLOAT),
        ("top1", FLOAT),
        ("val_top1", FLOAT),
        ("top1_dense", FLOAT),
        ("val_top1_dense", FLOAT),
        ("block_size", INT),
        ("num_grads", INT),
        ("damp", FLOAT),
        ("grad_batch_size", INT),
        ("dtype", STR),
        ("fisher_seconds", FLOAT),
        ("plan_seconds", FLOAT),
        ("apply_seconds", FLOAT),
        ("prune_seconds", FLOAT),
        ("peak_rss_mb", FLOAT),
        ("params_total", INT),
        ("params_prunable", INT),
        ("params_nonzero", INT),
        ("flops_dense", INT),
        ("flops_nonzero", INT),
        ("seed", INT),
        ("model_source", STR),
    ),
)

# `ovit-ray prune --method optin|structured-magnitude` and structured sweeps: one row per (model, budget,
# seed, follow-up). GMACs per image (analytic: heads, neurons, tokens, patch embedding, classifier); speed
# is measured (dense and pruned interleaved in one loop), never inferred.
STRUCTURED_RESULTS = _schema(
    "structured_results",
    _same(STR, "run_key", "model", "method"),
    # estimated_latency_ratio: the pruned latency the measured per-layer table predicts (latency budgets)
    _same(FLOAT, "flops_ratio", "latency_ratio", "estimated_latency_ratio", "achieved_flops_ratio"),
    _same(STR, "recover"),
    _same(FLOAT, "token_share", "achieved_token_share"),
    _same(pa.list_(INT), "merge_r"),
    _same(INT, "round_to"),
    _same(pa.list_(INT), "heads_kept", "neurons_kept"),
    _same(STR, "then_method", "then_pattern"),
    _same(FLOAT, "then_sparsity", "achieved_sparsity", "gmacs", "gmacs_dense", "gmacs_sparse"),
    _same(INT, "params", "params_dense", "params_nonzero", "calib_size", "seed"),
    _same(FLOAT, "score_seconds"),
    _same(pa.bool_(), "scores_cached"),
    _same(FLOAT, "top1", "val_top1", "top1_masked", "top1_dense", "val_top1_dense"),
    _same(
        FLOAT, "latency_ms", "latency_p90_ms", "latency_dense_ms", "throughput_ips", "throughput_dense_ips"
    ),
    _same(FLOAT, "speedup_latency", "speedup_throughput"),
    _same(INT, "speed_batch", "speed_threads"),
    _same(STR, "speed_device", "torch_version", "model_source", "checkpoint"),
    # BoundaryDPT depth pruning (training.depth): what was removed, the stages, recovery and compute;
    # top1_after_removal: every depth edit at once, before any fine-tune; top1_linearised: the model right
    # before its MLPs were merged
    _same(STR, "depth_scorer"),
    _same(INT, "attn_dropped", "act_linearised", "mlps_merged"),
    _same(STR, "stage_order"),
    _same(FLOAT, "width_ratio"),
    _same(INT, "stage1_epochs", "stage2_epochs", "final_epochs", "epochs", "best_epoch"),
    _same(FLOAT, "top1_after_removal", "top1_linearised", "cpu_hours", "gpu_hours"),
)

# `ovit-ray train` and `compare-strategies`: one row per (run, target).
RUN_RESULTS = _schema(
    "run_results",
    _fields(("run_key", STR), ("run_name", STR), ("strategy", STR)),
    GRADUAL_KNOBS,
    TARGET_RESULT,
    _fields(
        ("run_total_epochs", INT),
        ("run_cpu_hours", FLOAT),
        ("run_gpu_hours", FLOAT),
        ("run_wall_seconds", FLOAT),
        ("run_overhead_seconds", FLOAT),
    ),
)

# Trial-level values shared by a sweep's per-target rows and its per-trial rows.
TRIAL_TOTALS = _fields(
    ("top1_final", FLOAT),
    ("top1_mean", FLOAT),
    ("val_top1_final", FLOAT),
    ("val_top1_mean", FLOAT),
    ("epochs_total", INT),
    ("trial_cpu_hours", FLOAT),
    ("trial_gpu_hours", FLOAT),
    ("loop_seconds", FLOAT),
    ("trial_seconds", FLOAT),
    ("overhead_seconds", FLOAT),
)

# `ovit-ray sweep` results.parquet: one row per (finished trial, target).
SWEEP_RESULTS = _schema(
    "sweep_results",
    _fields(("trial_id", STR), ("sweep", STR), ("strategy", STR)),
    GRADUAL_KNOBS,
    TARGET_RESULT,
    _fields(("run_epochs", INT), ("flops_dense", INT), ("flops_nonzero", INT), ("flops_reduction", FLOAT)),
    TRIAL_TOTALS,
)

# `ovit-ray sweep` trials.parquet: one row per trial however it ended (finished, stopped_early, failed);
# the totals of a stopped or failed trial are what it had spent when it ended (no objectives).
TRIAL_STATUSES = ("finished", "stopped_early", "failed")
SWEEP_TRIALS = _schema(
    "sweep_trials",
    _fields(("trial_id", STR), ("sweep", STR), ("status", STR), ("strategy", STR)),
    GRADUAL_KNOBS,
    _fields(("top1_last", FLOAT), ("sparsity_last", FLOAT)),
    TRIAL_TOTALS,
)

# `ovit-ray transfer`: one row per (source, dataset, mode, seed); source knobs where the source had them.
TRANSFER_RESULTS = _schema(
    "transfer_results",
    _fields(
        ("source", STR),
        ("source_method", STR),
        ("target_sparsity", FLOAT),
        ("block_size", INT),
        ("num_grads", INT),
        ("damp", FLOAT),
        ("strategy", STR),
        ("trial_id", STR),
        ("source_seed", INT),
        ("mode", STR),
        ("dataset", STR),
        ("source_model", STR),
        ("checkpoint", STR),
        ("source_top1", FLOAT),
        ("achieved_sparsity", FLOAT),
        ("final_sparsity", FLOAT),
        ("top1", FLOAT),
        ("val_top1", FLOAT),
        ("best_epoch", INT),
        ("epochs", INT),
        ("seed", INT),
        ("num_classes", INT),
        ("train_images", INT),
        ("seconds", FLOAT),
        ("cpu_hours", FLOAT),
        ("gpu_hours", FLOAT),
    ),
)

# A transfer sweep's source runs (`transfer_sweep`): one row per (method, seed, target).
TRANSFER_SOURCES = _schema(
    "transfer_sources",
    _fields(
        ("method", STR),
        ("seed", INT),
        ("model", STR),
        ("block_size", INT),
        ("num_grads", INT),
        ("damp", FLOAT),
        ("target_sparsity", FLOAT),
        ("achieved_sparsity", FLOAT),
        ("top1", FLOAT),
        ("val_top1", FLOAT),
        ("checkpoint", STR),
        ("epochs", INT),
    ),
)

# benchmarks/bench_regime.py: one row per (strategy, method, B, seed, target, regime).
REGIME_BENCH = _schema(
    "regime_bench",
    _fields(
        ("strategy", STR),
        ("method", STR),
        ("block_size", INT),
        ("seed", INT),
        ("max_steps_per_epoch", INT),
        ("window_epochs", INT),
        ("seconds", FLOAT),
        ("target_sparsity", FLOAT),
        ("achieved_sparsity", FLOAT),
        ("top1", FLOAT),
        ("val_top1", FLOAT),
        ("epochs", INT),
    ),
)

SCHEMAS = {
    s.metadata[KIND_KEY].decode(): s
    for s in (
        PRUNE_RESULTS,
        STRUCTURED_RESULTS,
        RUN_RESULTS,
        SWEEP_RESULTS,
        SWEEP_TRIALS,
        TRANSFER_RESULTS,
        TRANSFER_SOURCES,
        REGIME_BENCH,
    )
}


def file_kind(schema: pa.Schema) -> str | None:
    """The kind recorded in a file's schema metadata (None for files written before the kinds existed)."""
    return (schema.metadata or {}).get(KIND_KEY, b"").decode() or None
