"""A sweep's search: Optuna TPE on a study kept on disk, or Tune's grid/random generator, and ASHA.

The Optuna searcher is ours, on Tune's public `Searcher` API and Optuna's ask-and-tell (Ray's `OptunaSearch`
needed its private attributes for each of the following):
- the study lives in an RDB next to the results (`sqlite:///<out>/optuna.db`), so optuna-dashboard opens it
  and `--add-trials` continues it: TPE samples conditioned on every earlier trial;
- the objectives are named, and each trial reports its top-1 at every target as an intermediate value
  (step = the target in %), so the dashboard draws the curves;
- a trial stopped early by ASHA is told PRUNED (not COMPLETE with a partial score, which misled TPE);
- a finished trial's objective is computed by the driver from the targets it delivered (`Ledger`);
- each Optuna trial carries its Tune trial id (user attribute `tune_trial_id`), and the searcher's saved
  state is only that mapping: a moved or copied folder goes on with its own copy of the study.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from ray.tune.experiment import Trial
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher, SearchGenerator

from ovit_ray.orchestration.common.ray_private import add_trial_home
from ovit_ray.orchestration.kinds.sweep_file import Sweep
from ovit_ray.orchestration.specs.search_space import Dist
from ovit_ray.orchestration.tune.hosts import OVIT, TRIAL_COMPLETE

__all__ = [
    "TUNE_TRIAL_ATTR",
    "StudySearcher",
    "make_scheduler",
    "make_searcher",
    "optuna_distribution",
    "tune_domain",
]

TUNE_TRIAL_ATTR = "tune_trial_id"


def optuna_distribution(dist: Dist) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution of a sampled knob."""
    if dist.loguniform is not None:
        return optuna.distributions.FloatDistribution(*dist.loguniform, log=True)
    if dist.uniform is not None:
        return optuna.distributions.FloatDistribution(*dist.uniform)
    if dist.randint is not None:
        return optuna.distributions.IntDistribution(*dist.randint)
    if dist.choice is not None:
        return optuna.distributions.CategoricalDistribution(dist.choice)
    raise ValueError(f"{dist.kind} is not sampled by Optuna")


def tune_domain(dist: Dist) -> Any:
    """Tune's search domain of a knob (a `Dist`; grid/random search without Optuna)."""
    from ray import tune

    if dist.loguniform is not None:
        return tune.loguniform(*dist.loguniform)
    if dist.uniform is not None:
        return tune.uniform(*dist.uniform)
    if dist.randint is not None:
        return tune.randint(dist.randint[0], dist.randint[1] + 1)
    if dist.choice is not None:
        return tune.choice(dist.choice)
    if dist.grid is not None:
        return tune.grid_search(dist.grid)
    raise ValueError(f"{dist.kind} is not searched by Tune")  # a fixed value is set, not searched


def make_scheduler(sweep: Sweep) -> Any:
    """The sweep's ASHA early stopping, or None."""
    asha = sweep.file.search.scheduler
    if asha is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="training_iteration",
        metric=asha.metric,
        mode="max",
        max_t=10_000,
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
    )


class StudySearcher(Searcher):
    """TPE over `space` on the stored study `study` (see the module docstring)."""

    def __init__(
        self,
        space: Mapping[str, Dist],
        objectives: Sequence[tuple[str, str]],
        storage: str,
        study: str,
        seed: int,
        ledger: Callable[[str], Mapping[str, Any]] | None,
    ) -> None:
        metric, mode = objectives[0] if len(objectives) == 1 else (None, None)
        super().__init__(metric=metric, mode=mode)
        self.space = {k: optuna_distribution(d) for k, d in space.items()}
        self.objectives, self.storage_uri, self.study_name, self.seed = objectives, storage, study, seed
        self.ledger = ledger
        self._trials: dict[str, int] = {}  # Tune trial id -> Optuna trial number
        self._live: dict[str, optuna.trial.Trial] = {}  # this process's asked trials (intermediate values)
        self._study: optuna.Study | None = None

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            directions: list[Literal["minimize", "maximize"]] = [
                "maximize" if mode == "max" else "minimize" for _, mode in self.objectives
            ]
            self._study = optuna.create_study(
                storage=self.storage_uri,
                study_name=self.study_name,
                directions=directions,
                sampler=optuna.samplers.TPESampler(seed=self.seed),
                load_if_exists=True,
            )
            if not self._study.metric_names:
                with warnings.catch_warnings():  # "experimental since 3.2": stable in every Optuna we support
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._study.set_metric_names([m for m, _ in self.objectives])
        return self._study

    def __getstate__(self) -> dict[str, Any]:  # Tune saves searchers with its experiment state
        return {**self.__dict__, "_study": None, "_live": {}, "ledger": None}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # the space and objectives are set at construction

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        trial = self.study.ask(dict(self.space))
        trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        self._trials[trial_id], self._live[trial_id] = trial.number, trial
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """A delivered target becomes the trial's intermediate value at step = target in % (one objective)."""
        # Tune hands searchers its flattened result ("ovit/target/top1"); callbacks get it nested
        prefix = f"{OVIT}/target/"
        target = {k.removeprefix(prefix): v for k, v in result.items() if k.startswith(prefix)}
        metric = self.objectives[0][0]
        value = target.get("val_top1" if metric.startswith("val_") else "top1")
        live = self._live.get(trial_id)  # (a trial restored from a stopped sweep reports no more curve)
        if (
            len(self.objectives) == 1
            and live is not None
            and target.get("target") is not None
            and value is not None
        ):
            live.report(float(value), step=round(100 * target["target"]))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        number = self._trials.pop(trial_id, None)
        self._live.pop(trial_id, None)
        if number is None:
            return
        state, values = optuna.trial.TrialState.FAIL, None
        if not error and (result or {}).get(TRIAL_COMPLETE) and self.ledger is not None:
            objectives = self.ledger(trial_id)
            found = [objectives.get(metric) for metric, _ in self.objectives]
            if None not in found:
                state, values = optuna.trial.TrialState.COMPLETE, [float(v) for v in found if v is not None]
        elif not error:
            state = optuna.trial.TrialState.PRUNED  # stopped early: no final report
        self.study.tell(number, values, state=state if values is None else None, skip_if_finished=True)

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"trials": self._trials}))

    def restore(self, checkpoint_path: str) -> None:
        self._trials = {k: int(v) for k, v in json.loads(Path(checkpoint_path).read_text())["trials"].items()}


class _HomeVariants(BasicVariantGenerator):
    def __init__(self, home: tuple[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._home = home

    def set_state(self, state: dict[str, Any]) -> None:
        home = self._home
        super().set_state(state)
        self._home = home

    def next_trial(self) -> Trial | None:
        return add_trial_home(super().next_trial(), *self._home)


class _HomeGenerator(SearchGenerator):
    def __init__(self, home: tuple[str, str], searcher: Any) -> None:
        super().__init__(searcher)
        self._home = home

    def next_trial(self) -> Trial | None:
        return add_trial_home(super().next_trial(), *self._home)


def distinct_runs(sweep: Sweep, varying: Mapping[str, Dist]) -> list[dict[str, Any]] | None:
    """The grid as Tune's preset points when the kind maps some combinations to one run (`same_run`):
    each distinct run, `num_samples` times; None when the plain grid already is distinct."""
    if any(d.kind != "grid" for d in varying.values()) or sweep.grid_size == len(sweep.grid_points()):
        return None
    runs = [{k: point[k] for k in varying} for point in sweep.grid_points()]
    return runs * sweep.file.search.num_samples


def make_searcher(
    sweep: Sweep,
    varying: Mapping[str, Dist],
    concurrency: int,
    storage: str,
    study: str,
    home: tuple[str, str],
    ledger: Callable[[str], Mapping[str, Any]],
    extensions: int = 0,
) -> Any:
    """Optuna on the stored study when the sweep samples; Tune's grid/random generator otherwise. `home` is
    (Tune storage path, experiment name) of the folder being run. An extension seeds its sampler apart: the
    same seed would replay the first random trials."""
    search = sweep.file.search
    if search.algorithm != "optuna" or not varying:
        return _HomeVariants(
            home,
            random_state=search.seed,
            max_concurrent=concurrency,
            points_to_evaluate=None if extensions else distinct_runs(sweep, varying),
        )
    objectives = [(o.metric, o.mode) for o in search.objectives]
    searcher = StudySearcher(varying, objectives, storage, study, search.seed + extensions, ledger)
    return _HomeGenerator(home, ConcurrencyLimiter(searcher, max_concurrent=concurrency))
