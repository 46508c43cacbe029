"""Ray's `OptunaSearch`, except that trials stopped early reach Optuna as PRUNED.

Measured here: stock OptunaSearch tells Optuna that an ASHA-stopped trial completed, with its partial
score, which misleads TPE and can put a trial on the multi-objective Pareto front only because it
stopped early. A sweep trial is complete only when its final report carries `trial_complete`.
Every Optuna trial carries its Tune trial id (user attribute `tune_trial_id`).
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from ovit_ray.orchestration.tune.trial import TRIAL_COMPLETE

TUNE_TRIAL_ATTR = "tune_trial_id"


class PrunedAwareOptuna(OptunaSearch):
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Also tag the Optuna trial with the Tune trial id (study row -> results row)."""
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return params

    def restore(self, checkpoint_path: str) -> None:
        """Keep this searcher's storage: the saved state holds the storage of the folder it was saved
        in, and a moved or copied sweep folder must go on with its own copy of the study."""
        storage = self._storage
        super().restore(checkpoint_path)
        if storage is not None:
            self._storage = storage
            # Ray's OptunaSearch sets `self._ot_study = None` in __init__ without an annotation.
            sampler = self._ot_study.sampler  # type: ignore[attr-defined]
            self._ot_study = optuna.load_study(  # type: ignore[assignment]
                study_name=self._study_name, storage=storage, sampler=sampler
            )

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Ignored: per-epoch results carry no objective, and ASHA (not Optuna) stops trials."""

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if not error and not (result or {}).get(TRIAL_COMPLETE):
            result = None  # OptunaSearch tells a trial without a value and without an error as PRUNED
        super().on_trial_complete(trial_id, result, error)
