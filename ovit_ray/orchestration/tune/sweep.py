"""`ovit-ray sweep`: a Ray Tune search over gradual-pruning runs, tracked in MLflow and Parquet.

Why each piece:
- Trials are `sweep_trial.sweep_trial` (light path for one worker, Train V2 driver for several).
- `max_concurrent_trials` comes from the cluster's resources: Tune schedules only the trial function,
  so without a cap every trial starts at once and waits for Train workers (the wait lands in wall time).
- `PrunedAwareOptuna`: Ray's OptunaSearch tells Optuna that ASHA-stopped trials completed with their
  partial score; here they are told as PRUNED (only a trial's final report marks it complete).
- Resume: the Tune experiment has a deterministic path (`<storage>/<sweep name>`); `sweep.json` in the
  output dir holds the sweep id and fingerprint, so a finished sweep is never started over by accident
  and a resume with a changed sweep file is refused.
- The Optuna study lives in an RDB (`search.py`); `add_trials` extends a finished sweep with a new
  Tune experiment (`<sweep name>-add<k>`) whose searcher continues the stored study. Rows, MLflow
  children and the parent run are shared; parent totals sum over the sweep's experiments.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.common.interrupts import Interrupted, StopSignals, tune_stop_on_signal
from ovit_ray.orchestration.common.ray_session import ray_session
from ovit_ray.orchestration.common.secrets import drop_propagated_secrets
from ovit_ray.orchestration.specs.search_space import Dist
from ovit_ray.orchestration.specs.sweep import SweepConfig
from ovit_ray.orchestration.specs.sweep_file import load_sweep
from ovit_ray.orchestration.tune.output_folder import (
    SWEEP_COPY,
    FolderLock,
    check_folder,
    relocate,
    write_state,
)
from ovit_ray.orchestration.tune.plan import DRIVER_CPU, make_plan, storage_path
from ovit_ray.orchestration.tune.preflight import check_sweep


def _tune_domain(dist: Dist) -> Any:
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
    raise ValueError(f"a fixed value is not searched: {dist.fixed!r}")


def _scheduler(sweep: SweepConfig) -> Any:
    if sweep.search.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = sweep.search.scheduler
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=s.metric,
        mode="max",
        max_t=10_000,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )


def _warm_preset(sweep: SweepConfig) -> None:
    """Train (or load) a preset once here, before trials start, instead of inside the first trials."""
    from ovit_ray.models import PRESETS
    from ovit_ray.training.preset import load_preset_model

    model = sweep.base.get("model", "digits-vit")
    if (
        model in PRESETS
        and not sweep.base.get("checkpoint")
        and sweep.base.get("dataset") in (None, PRESETS[model].dataset)
    ):
        load_preset_model(model)


@dataclass(frozen=True)
class SweepOutcome:
    out: Path
    totals: dict[str, float]
    best: dict[str, Any] | None
    plots: list[Path]
    parent_run_id: str


def _study(
    state: dict[str, Any], sweep: SweepConfig, out: Path, storage: str | None, add_trials: int
) -> tuple[dict[str, Any], int, int]:
    """State with the study's place recorded; (number of extensions, trials this experiment runs)."""
    from ovit_ray.orchestration.tune.search import study_name

    recorded = state.get("optuna_storage")
    if storage and recorded and storage != recorded:
        raise ValueError(f"--optuna-storage: {out} keeps its study in {recorded}, got {storage}")
    state = {
        "optuna_storage": recorded or storage,  # None: the folder's own optuna.db
        "study_name": state.get("study_name") or study_name(sweep.name, state["sweep_id"]),
        **state,
    }
    if add_trials:
        if add_trials < 1:
            raise ValueError(f"--add-trials: must be >= 1, got {add_trials}")
        if not state.get("finished"):
            raise ValueError(f"--add-trials: the sweep in {out} has not finished; --resume it first")
        if sweep.search.algorithm != "optuna":
            raise ValueError(
                f"--add-trials: needs search.algorithm optuna, the sweep uses {sweep.search.algorithm}"
            )
        state = {**state, "finished": False, "extensions": [*state.get("extensions", []), add_trials]}
    extensions = state.get("extensions", [])
    return state, len(extensions), extensions[-1] if extensions else sweep.search.num_samples


def run_sweep(
    path: str | Path,
    out: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    mlflow_uri: str | None = None,
    add_trials: int = 0,
    optuna_storage: str | None = None,
) -> SweepOutcome:
    """Run (or resume, or extend by `add_trials`) the sweep in `path` into `out`; see the module docstring
    and `output_folder`.

    Stopped by a signal, it raises `Interrupted` after marking the sweep interrupted (sweep.json, the
    MLflow parent and open child runs KILLED); the folder then resumes with `--resume`.
    """
    sweep = load_sweep(path)
    check_sweep(path, sweep)
    out = Path(out).resolve()
    check_folder(out, sweep.name, sweep.fingerprint(), resume or add_trials > 0)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out), StopSignals() as signals:
        state = check_folder(out, sweep.name, sweep.fingerprint(), resume or add_trials > 0)  # again, locked
        if resume or add_trials:
            state = relocate(out, state)
        else:
            shutil.copyfile(path, out / SWEEP_COPY)
        state, extensions, samples = _study(state, sweep, out, optuna_storage, add_trials)
        state = {**state, "interrupted": False}
        write_state(out, state)
        hint = f"resume with: ovit-ray sweep {shlex.quote(str(path))} --out {shlex.quote(str(out))} --resume"
        try:
            return _run(
                sweep,
                out,
                state,
                signals,
                address=address,
                resume=resume,
                mlflow_uri=mlflow_uri,
                extensions=extensions,
                samples=samples,
            )
        except KeyboardInterrupt as stop:  # ours, or Ray's own after our handler raised inside ray.wait
            write_state(out, {**state, "interrupted": True})
            signum = stop.signum if isinstance(stop, Interrupted) else signals.received or signal.SIGINT
            raise Interrupted(signum, hint) from None
        except BaseException:
            write_state(out, {**state, "interrupted": True})
            raise


def _run(
    sweep: SweepConfig,
    out: Path,
    state: dict[str, Any],
    signals: StopSignals,
    *,
    address: str | None,
    resume: bool,
    mlflow_uri: str | None,
    extensions: int,
    samples: int,
) -> SweepOutcome:
    import ray
    from ray import tune

    from ovit_ray.orchestration.tracking.client import Tracker
    from ovit_ray.orchestration.tune.search import experiment_name, make_searcher, study_storage
    from ovit_ray.orchestration.tune.summary import finish_sweep, sweep_totals
    from ovit_ray.orchestration.tune.tracking import SweepTracking, sweep_params
    from ovit_ray.orchestration.tune.trial import sweep_trial

    # Per-epoch results do not carry the objectives (only a trial's final report does); experiment
    # state is saved every second, so a killed sweep resumes without re-running finished trials.
    # SIGINT stays with our handler (Tune would swallow it and return as if finished).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    drop_propagated_secrets()
    _warm_preset(sweep)
    with ray_session(address):
        cluster = ray.cluster_resources()
        plan = make_plan(sweep, cluster.get("CPU", 0), cluster.get("GPU", 0), strict=address is None)
        uri = mlflow_uri or sweep.mlflow.uri
        tracker = Tracker(out, sweep.mlflow.experiment, uri)
        tracker.describe_experiment(sweep.description)
        parent = tracker.start_run(
            sweep.name,
            sweep_params(sweep),
            {"ovit.sweep": sweep.name, "ovit.kind": "sweep"},
            run_key=f"sweep-{state['sweep_id']}",
        )
        if not resume:
            tracker.log_artifact(parent, out / SWEEP_COPY)
        storage = storage_path(sweep, out)
        trainable = tune.with_parameters(sweep_trial, sweep=sweep, fixed=plan.fixed, storage=storage)
        trainable = tune.with_resources(
            trainable,
            {
                "CPU": plan.trial_cpus if plan.light else DRIVER_CPU,
                "GPU": plan.trial_gpus if plan.light else 0,
                **(sweep.resources.custom if plan.light else {}),
            },
        )
        name = experiment_name(sweep.name, extensions)
        experiment = f"{storage.rstrip('/')}/{name}"
        callback = SweepTracking(
            out, sweep.mlflow.experiment, uri, parent, state["sweep_id"], sweep, plan.fixed
        )
        searcher = make_searcher(
            plan, study_storage(out, state), state["study_name"], (storage, name), extensions
        )
        if resume and tune.Tuner.can_restore(experiment):
            tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=False)
            # The restored tuner holds the callback and searcher pickled with the folder it was started
            # in; these write here (a moved or copied folder resumes in place). Tune then loads the
            # saved search state into this searcher, which keeps its own storage and home.
            restored = tuner._local_tuner  # None only through Ray Client, which sweeps do not use
            if restored is None:
                raise RuntimeError(f"{experiment}: Tune restored no local tuner (Ray Client?)")
            restored.get_run_config().callbacks = [callback]
            restored._tune_config.search_alg = searcher
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={k: _tune_domain(d) for k, d in plan.varying.items()},
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=_scheduler(sweep),
                    num_samples=samples,
                    max_concurrent_trials=None,  # the searcher carries plan.concurrency
                    # Every trial asks for the same resources, so an ended trial's
                    # actor (torch, timm, data already imported) can run the next:
                    # a fresh actor costs ~10 s of start-up here (BENCHMARKS.md).
                    reuse_actors=True,
                    trial_dirname_creator=lambda t: t.trial_id,
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=storage,
                    callbacks=[callback],
                    failure_config=tune.FailureConfig(max_failures=sweep.resources.max_failures),
                    verbose=1,
                ),
            )
        try:
            with tune_stop_on_signal(signals):
                grid = tuner.fit()
            if signals.received is not None:  # Tune stopped gracefully and returned as if finished
                raise Interrupted(signals.received)
            earlier = {k: v for k, v in state.get("totals", {}).items() if k != name}
            own = sweep_totals([(r.metrics or {}, r.error is not None) for r in grid])  # type: ignore[attr-defined]
            totals, best, plots = finish_sweep(tracker, parent, sweep, grid, out, earlier.values())
        except BaseException as error:  # a stop signal may also come while the sweep is being summed up
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            callback.end_open_children(status)
            tracker.end_run(parent, status)
            raise
    write_state(out, {**state, "finished": True, "totals": {**earlier, name: own}})
    return SweepOutcome(out, totals, best, plots, parent)
