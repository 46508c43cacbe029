"""A sweep's search algorithm, with its Optuna study on disk.

Why an RDB: Ray's OptunaSearch keeps the study in memory unless it gets a storage, so
optuna-dashboard could not open it and a finished sweep could not be extended (a new searcher would
start TPE from nothing). With `sqlite:///<out>/optuna.db` (or any `--optuna-storage` URI) and a
study name fixed per sweep, `optuna-dashboard <uri>` shows the study and a later searcher on the
same study (`--add-trials`) samples conditioned on every earlier trial. Each Optuna trial carries the
Tune trial id as the user attribute `tune_trial_id`, so a study row leads to its results row.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ray.train._internal.storage import get_fs_and_path
from ray.tune.experiment import Trial
from ray.tune.search import BasicVariantGenerator, SearchGenerator

from ovit_ray.orchestration.tune.optuna_pruned import PrunedAwareOptuna

STUDY_FILE = "optuna.db"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / STUDY_FILE).resolve()}"


def study_storage(out: Path, state: dict[str, Any]) -> str:
    """The study's URI: the one the user chose, else the folder's own `optuna.db` (derived, never
    recorded, so a moved or copied folder uses its own copy)."""
    return str(state.get("optuna_storage") or default_storage(out))


def _send_home(trial: Trial | None, home: tuple[str, str]) -> Trial | None:
    """Point a new trial at this folder's Tune storage, as Tune does for the trials it restores:
    the generator's saved state names the storage of the folder it was saved in."""
    if trial is not None and trial.storage is not None:
        storage = copy.copy(trial.storage)
        storage.storage_filesystem, storage.storage_fs_path = get_fs_and_path(home[0])
        storage.experiment_dir_name = home[1]
        trial.set_storage(storage)
    return trial


class _HomeVariants(BasicVariantGenerator):
    def __init__(self, home: tuple[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._home = home

    def set_state(self, state: dict[str, Any]) -> None:
        home = self._home
        super().set_state(state)
        self._home = home

    def next_trial(self) -> Trial | None:
        return _send_home(super().next_trial(), self._home)


class _HomeGenerator(SearchGenerator):
    def __init__(self, home: tuple[str, str], searcher: Any) -> None:
        super().__init__(searcher)
        self._home = home

    def next_trial(self) -> Trial | None:
        return _send_home(super().next_trial(), self._home)


def study_name(sweep_name: str, sweep_id: str) -> str:
    return f"{sweep_name}-{sweep_id}"


def experiment_name(sweep_name: str, extensions: int) -> str:
    """The Tune experiment of the original sweep, then one per `--add-trials` extension."""
    return sweep_name if extensions == 0 else f"{sweep_name}-add{extensions}"


def make_searcher(plan: Any, storage: str, study: str, home: tuple[str, str], extensions: int = 0) -> Any:
    """Optuna (TPE) on the stored study when the sweep samples; Tune's grid/random generator otherwise.
    `home` is (Tune storage path, experiment name) of the folder being run: trials the generator makes
    after a restore go there, not to the folder the saved state came from. An extension seeds its
    sampler differently: the same seed would replay the first random trials."""
    from ray.tune.search import ConcurrencyLimiter

    search = plan.sweep.search
    if search.algorithm != "optuna" or not plan.varying:
        return _HomeVariants(home, random_state=plan.sweep.seed, max_concurrent=plan.concurrency)
    import optuna

    metrics = [o.metric for o in search.objectives]
    modes = [o.mode for o in search.objectives]
    single = len(metrics) == 1
    searcher = PrunedAwareOptuna(
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        seed=plan.sweep.seed + extensions,
        storage=optuna.storages.RDBStorage(storage),
        study_name=study,
    )
    # Wrapped here, not by Tune (TuneConfig.max_concurrent_trials stays None), so that the generator
    # is ours and keeps new trials at home.
    return _HomeGenerator(home, ConcurrencyLimiter(searcher, max_concurrent=plan.concurrency))
