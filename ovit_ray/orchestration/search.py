"""A sweep's search algorithm, with its Optuna study on disk.

Why an RDB: Ray's OptunaSearch keeps the study in memory unless it gets a storage, so
optuna-dashboard could not open it and a finished sweep could not be extended (a new searcher would
start TPE from nothing). With `sqlite:///<out>/optuna.db` (or any `--optuna-storage` URI) and a
study name fixed per sweep, `optuna-dashboard <uri>` shows the study and a later searcher on the
same study (`--add-trials`) samples conditioned on every earlier trial. Each Optuna trial carries the
Tune trial id as the user attribute `tune_trial_id`, so a study row leads to its results row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STUDY_FILE = "optuna.db"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def study_name(sweep_name: str, sweep_id: str) -> str:
    return f"{sweep_name}-{sweep_id}"


def experiment_name(sweep_name: str, extensions: int) -> str:
    """The Tune experiment of the original sweep, then one per `--add-trials` extension."""
    return sweep_name if extensions == 0 else f"{sweep_name}-add{extensions}"


def make_searcher(plan: Any, storage: str, study: str, extensions: int = 0) -> Any:
    """Optuna (TPE) on the stored study when the sweep samples; Tune's grid/random generator otherwise.
    An extension seeds its sampler differently: the same seed would replay the first random trials."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = plan.sweep.search
    if search.algorithm != "optuna" or not plan.varying:
        # An instance ignores TuneConfig.max_concurrent_trials (only Searchers get wrapped): pass it here.
        return BasicVariantGenerator(random_state=plan.sweep.seed, max_concurrent=plan.concurrency)
    import optuna

    from ovit_ray.orchestration.optuna_pruned import PrunedAwareOptuna

    metrics = [o.metric for o in search.objectives]
    modes = [o.mode for o in search.objectives]
    single = len(metrics) == 1
    return PrunedAwareOptuna(
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        seed=plan.sweep.seed + extensions,
        storage=optuna.storages.RDBStorage(storage),
        study_name=study,
    )
