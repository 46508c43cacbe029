"""Every use of Ray's private API, in one place, each with the reason no public API does the job.

`USES` lists them (tests/test_ray_private.py checks the list against the code, so a new private use
cannot hide elsewhere). These are what pins Ray to one minor version (pyproject: `ray>=2.60,<2.61`):
a change in any of them shows up in that test file first.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "USES",
    "add_trial_home",
    "drop_propagated_secrets",
    "prepare_launcher_config",
    "reload_ray_auth",
    "restore_tuner",
]

USES = {
    "restore_tuner": "Tuner.restore() re-creates the callbacks and searcher pickled with the folder the sweep "
    "started in, and takes no new ones: a moved folder must write its MLflow runs and Optuna study in place "
    "(tuner._local_tuner.get_run_config().callbacks, ._tune_config.search_alg)",
    "add_trial_home": "a restored search generator makes new trials with the storage of the folder its state "
    "was saved in; Tune re-homes only the trials it restores (Trial.storage, a StorageContext copy)",
    "prepare_launcher_config": "validating a cluster-launcher file offline with Ray's own rules "
    "(ray.autoscaler._private.util.prepare_config / validate_config); `ray up` has no dry run",
    "drop_propagated_secrets": "Tune copies cloud credentials (AWS_*) from the driver into every trial's "
    "runtime environment, where they end in Ray's logs; its list of variables has no public setting "
    "(ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE)",
    "reload_ray_auth": "Ray reads RAY_AUTH_MODE and its token once at import; turning token auth on for a "
    "local instance after ray was imported needs its config reloaded (ray._raylet.Config, "
    "AuthenticationTokenLoader)",
}


def restore_tuner(experiment: str, trainable: Any, callbacks: Sequence[Any], searcher: Any) -> Any:
    """`Tuner.restore` of `experiment` that writes through `callbacks` and searches with `searcher` (this
    folder's), resuming unfinished trials; Tune then loads its saved search state into `searcher`."""
    from ray import tune

    tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
    local = tuner._local_tuner  # None only through Ray Client, which sweeps do not use
    if local is None:
        raise RuntimeError(f"{experiment}: Tune restored no local tuner (Ray Client?)")
    local.get_run_config().callbacks = list(callbacks)
    local._tune_config.search_alg = searcher
    return tuner


def add_trial_home(trial: Any, storage_path: str, experiment_name: str) -> Any:
    """Point a new trial at this folder's Tune storage (`storage_path`/`experiment_name`)."""
    if trial is not None and trial.storage is not None:
        import pyarrow.fs

        storage = copy.copy(trial.storage)
        storage.storage_filesystem, storage.storage_fs_path = pyarrow.fs.FileSystem.from_uri(storage_path)
        storage.experiment_dir_name = experiment_name
        trial.set_storage(storage)
    return trial


def prepare_launcher_config(config: dict[str, Any]) -> dict[str, Any]:
    """A cluster-launcher config filled in and checked by Ray's own rules (raises on a bad one)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared: dict[str, Any] = prepare_config(config)
    validate_config(prepared)
    return prepared


def reload_ray_auth() -> None:
    """Make an imported Ray re-read `RAY_AUTH_MODE` and its token; before Ray is imported nothing to do."""
    if "ray" not in sys.modules:
        return
    from ray._raylet import (  # type: ignore[attr-defined]  # Cython module; its .pyi omits these two
        AuthenticationTokenLoader,
        Config,
    )

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def drop_propagated_secrets() -> None:
    """Stop Tune from copying cloud credentials into trial runtime environments (Tune's own list); local
    workers still see the driver's environment, a cluster's nodes their own instance profile."""
    from ray.tune.execution import class_cache

    from ovit_ray.orchestration.common.secrets import PROPAGATED_SECRETS

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(PROPAGATED_SECRETS)
