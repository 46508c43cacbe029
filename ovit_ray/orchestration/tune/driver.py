"""The one driver of every kind of experiment: a sweep (a file, or what `train`, `compare-strategies`,
`transfer` and `prune` build) run on Ray Tune (or in this process with `resources.local`), with one output
folder contract, one resume / lock / interrupt path, one writer of Parquet, MLflow and the display.

- Trials run `tune.hosts.sweep_trial`, which hands the kind's spec to `ExperimentKind.run`.
- `max_concurrent_trials` comes from the cluster's resources: Tune schedules only the trial function, so
  without a cap every trial starts at once and waits for Train workers (the wait lands in wall time).
- Resume: the Tune experiment has a place unique to the folder (`<storage>/<sweep>-<id>`); `sweep.json`
  holds the id and the fingerprint, so a finished sweep is never started over by accident, a resume with a
  changed sweep file is refused, and a moved or copied folder resumes in place.
- `--add-trials N` extends a finished Optuna sweep with a new Tune experiment (`<sweep>-<id>-add<k>`) whose
  searcher continues the stored study; rows, MLflow children and the parent run are shared.
- Stopped by a signal, it marks the sweep interrupted (sweep.json, the parent and open child runs KILLED)
  and raises `Interrupted`; the folder resumes with `--resume`. A sweep with failed trials is never
  reported as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ovit_ray.orchestration.common.bounds import check_add_trials
from ovit_ray.orchestration.common.interrupts import Interrupted, StopSignals, tune_stop_on_signal
from ovit_ray.orchestration.common.ray_private import drop_propagated_secrets
from ovit_ray.orchestration.common.ray_session import check_ray_address
from ovit_ray.orchestration.kinds.sweep_file import Sweep
from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.tune.display import Display, capture_logs, show_warnings
from ovit_ray.orchestration.tune.folder import (
    STUDY_FILE,
    SWEEP_COPY,
    FolderLock,
    check_folder,
    check_stores,
    claim_place,
    experiment_name,
    relocate,
    write_state,
)
from ovit_ray.orchestration.tune.ledger import Ledger
from ovit_ray.orchestration.tune.plan import DRIVER_CPU, Plan, make_plan, storage_root
from ovit_ray.orchestration.tune.preflight import check_sweep

if TYPE_CHECKING:
    from ovit_ray.orchestration.tune.writer import SweepWriter

__all__ = ["Outcome", "run_sweep"]

ENDED_STATUSES = ("finished", "stopped_early", "failed")  # a resume keeps these trials, never runs them again


@dataclass(frozen=True)
class Outcome:
    out: Path
    counts: dict[str, int]  # trials by how they ended: finished, stopped_early, failed
    totals: dict[str, float]
    best: dict[str, Any] | None
    plots: list[Path]
    log: Path | None


def _study_state(
    state: dict[str, Any], sweep: Sweep, out: Path, storage: str | None, add_trials: int
) -> tuple[dict[str, Any], int, int]:
    """State with the study's place recorded (checked by `check_stores`); (number of extensions, trials
    this experiment runs)."""
    state = {
        "optuna_storage": state.get("optuna_storage") or storage,
        "study_name": state.get("study_name") or f"{sweep.name}-{state['sweep_id']}",
        **state,
    }
    if add_trials:
        if not state.get("finished"):
            raise ValueError(f"--add-trials: the sweep in {out} has not finished; --resume it first")
        if sweep.file.search.algorithm != "optuna":
            raise ValueError(
                f"--add-trials: needs search.algorithm optuna, the sweep uses {sweep.file.search.algorithm}"
            )
        state = {**state, "finished": False, "extensions": [*state.get("extensions", []), add_trials]}
    extensions = state.get("extensions", [])
    return state, len(extensions), extensions[-1] if extensions else sweep.file.search.num_samples


def _study_uri(out: Path, state: Mapping[str, Any]) -> str:
    """The study's URI: the one the user chose, else the folder's own `optuna.db` (derived, never recorded,
    so a moved or copied folder uses its own copy)."""
    from ovit_ray.orchestration.common.stores import sqlite_url

    return str(state.get("optuna_storage") or sqlite_url(out / STUDY_FILE))


def _warm_preset(sweep: Sweep) -> None:
    """Train (or load) a preset once here, before trials start, instead of inside the first trials."""
    from ovit_ray.models import PRESETS
    from ovit_ray.training.preset import load_preset_model

    base = sweep.base()
    model = base.get("model", "digits-vit")
    if (
        model in PRESETS
        and not base.get("checkpoint")
        and base.get("dataset") in (None, PRESETS[model].dataset)
    ):
        load_preset_model(model)


def run_sweep(
    sweep: Sweep,
    out: str | Path,
    *,
    address: str | None = None,
    resume: bool = False,
    mlflow_uri: str | None = None,
    add_trials: int = 0,
    optuna_storage: str | None = None,
    verbose: bool = False,
    source_text: str | None = None,
) -> Outcome:
    """Run (or resume, or extend by `add_trials`) `sweep` into `out` (see the module docstring).
    `source_text`: the sweep file as written, kept in the folder (default: the resolved sweep as YAML)."""
    check_sweep(sweep)
    out = Path(out).resolve()
    check_add_trials(add_trials)
    resuming = resume or add_trials > 0
    storage = None if sweep.file.resources.local else storage_root(sweep, out)
    state = check_folder(out, sweep.name, sweep.fingerprint(), resuming)  # before anything is written
    check_stores(out, state, storage, optuna_storage, resuming)
    if address is not None and not sweep.file.resources.local:
        check_ray_address(address)  # a HOST:PORT where nothing answers: one line, nothing written
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out), StopSignals() as signals:
        state = check_folder(out, sweep.name, sweep.fingerprint(), resuming)  # again, locked
        check_stores(out, state, storage, optuna_storage, resuming)
        if resuming:
            state = relocate(out, state)
        else:
            (out / SWEEP_COPY).write_text(source_text or yaml.safe_dump(_as_file(sweep), sort_keys=False))
        state, extensions, samples = _study_state(state, sweep, out, optuna_storage, add_trials)
        if storage is not None:  # before Ray: the place is this sweep's from now on
            claim_place(storage, experiment_name(state, extensions), state["sweep_id"], resuming)
        write_state(out, {**state, "interrupted": False})
        hint = f"resume with: ovit-ray sweep {shlex.quote(sweep.path or str(out / SWEEP_COPY))} --out {shlex.quote(str(out))} --resume"
        try:
            outcome = _run(
                sweep, out, state, signals, address, resuming, mlflow_uri, extensions, samples, verbose
            )
        except KeyboardInterrupt as stop:  # ours, or Ray's own after our handler raised inside ray.wait
            write_state(out, _stopped(state))
            signum = stop.signum if isinstance(stop, Interrupted) else signals.received or signal.SIGINT
            raise Interrupted(signum, hint) from None
        except BaseException:
            write_state(out, _stopped(state))
            raise
        complete = outcome.counts.get("interrupted", 0) == 0
        write_state(
            out, {**state, "finished": complete, "interrupted": not complete, "counts": outcome.counts}
        )
        if not complete:
            raise Interrupted(signals.received or signal.SIGINT, hint)
        return outcome


def _stopped(state: dict[str, Any]) -> dict[str, Any]:
    """The state of a run that stopped early: interrupted, unless it resumed a sweep that had finished (it
    stays finished: a sweep is never both)."""
    return {**state, "interrupted": not state.get("finished", False)}


def _as_file(sweep: Sweep) -> dict[str, Any]:
    """A sweep built by a command, written as the sweep file that would make it (kept in the folder)."""
    file = sweep.file.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    return {
        **file,
        sweep.kind: sweep.section,
        "search": {
            **file.get("search", {}),
            "params": {k: d.model_dump(exclude_none=True) for k, d in sweep.knobs.items()},
        },
    }


def _run(
    sweep: Sweep,
    out: Path,
    state: dict[str, Any],
    signals: StopSignals,
    address: str | None,
    resuming: bool,
    mlflow_uri: str | None,
    extensions: int,
    samples: int,
    verbose: bool,
) -> Outcome:
    from ovit_ray.orchestration.results import TRIALS_FILE
    from ovit_ray.orchestration.results.parquet import read_rows
    from ovit_ray.orchestration.tracking.client import Tracker
    from ovit_ray.orchestration.tune.summary import finish_sweep, sweep_params
    from ovit_ray.orchestration.tune.writer import SweepWriter

    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # only the last report carries the objectives
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "1"  # a killed sweep resumes without re-running finished trials
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT stays ours (Tune would return as if finished)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # our writer keeps results; no CSV/JSON/TB files
    drop_propagated_secrets()
    _warm_preset(sweep)
    ledger = Ledger()
    rows, trials = out / RESULTS_FILE, out / TRIALS_FILE
    ledger.load(read_rows(rows) if rows.exists() else [], read_rows(trials) if trials.exists() else [])
    uri = mlflow_uri or sweep.file.mlflow.uri
    with capture_logs(out, verbose) as (console, log):
        tracker = Tracker(out, sweep.file.mlflow.experiment, uri)
        tracker.describe_experiment(sweep.file.description)
        parent = tracker.start_run(
            f"{sweep.name} (sweep)",
            sweep_params(sweep),
            {"ovit.sweep": sweep.name, "ovit.kind": sweep.kind, "ovit.role": "sweep"},
            run_key=f"sweep-{state['sweep_id']}",
        )
        if not resuming:
            tracker.log_artifact(parent, out / SWEEP_COPY)
        plan = make_plan(sweep, float(os.cpu_count() or 1), 0.0, strict=False)
        kind = sweep.experiment_kind()
        metric = sweep.file.search.objectives[0]
        display = Display(
            title=f"{sweep.name} ({sweep.kind}, search {sweep.file.search.algorithm})",
            total=sweep.max_trials if not extensions else samples,
            objective=(metric.metric, metric.mode),
            targets=len(kind.targets(sweep.spec(sweep.first_values()))),
            target_name=kind.target_name,
            log=log,
            console=console,
            live=console.is_terminal and not verbose,
            ended={}
            if extensions
            else {t: r.status for t, r in ledger.trials.items() if r.status in ENDED_STATUSES},
        )
        writer = SweepWriter(
            sweep,
            out,
            tracker,
            parent,
            state["sweep_id"],
            ledger,
            display,
            (plan.trial_cpus, plan.trial_gpus),
        )
        try:
            with display, show_warnings(display):
                if sweep.file.resources.local:
                    _run_local(sweep, out, writer, signals)
                else:
                    _run_tune(sweep, out, state, signals, address, resuming, extensions, samples, writer)
                totals, best, plots = finish_sweep(tracker, parent, sweep, out, ledger, writer.specs)
        except BaseException as error:
            tracker.end_run(parent, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
    counts = {
        s: sum(r.status == s for r in ledger.trials.values())
        for s in ("finished", "stopped_early", "failed", "interrupted")
    }
    return Outcome(out, counts, totals, best, plots, log)


def _trial_id(point: Mapping[str, Any]) -> str:
    """A local trial's id: stable for the same knob values, so a re-run skips the trials it finished."""
    digest = hashlib.sha256(json.dumps(dict(point), sort_keys=True, default=str).encode()).hexdigest()
    return f"local-{digest[:8]}"


def _run_local(sweep: Sweep, out: Path, writer: SweepWriter, signals: StopSignals) -> None:
    """Every grid point, one after another, in this process (`resources.local`). A stop signal while a
    trial's end is written waits for it (a trial whose row said finished kept a RUNNING MLflow run)."""
    from ovit_ray.orchestration.tune.hosts import LocalHost

    kind = sweep.experiment_kind()
    for point in sweep.grid_points():
        trial_id = _trial_id(point)
        if writer.ledger[trial_id].status in ENDED_STATUSES:
            continue
        began, clock = time.time(), time.perf_counter()
        writer.started(trial_id, point, began)
        host = LocalHost(trial_id, out / "local" / trial_id, partial(writer.result, trial_id, point))
        error = ""
        try:
            kind.run(writer.spec(trial_id, point), host)
        except KeyboardInterrupt:
            writer.interrupted(time.time())
            raise
        except Exception as err:  # a failed trial, as in Tune: the next one runs
            error = f"{type(err).__name__}: {err}"[:300]
        with signals.graceful(lambda signum, frame: None):
            if not error:
                spent = (time.perf_counter() - clock) * sweep.file.resources.cpus_per_worker / 3600
                writer.result(trial_id, point, {"done": host.loop or {"cpu_hours": spent, "gpu_hours": 0.0}})
            writer.ended(trial_id, point, "failed" if error else "finished", time.time(), error=error)
        if signals.received is not None:
            raise Interrupted(signals.received)


def _run_tune(
    sweep: Sweep,
    out: Path,
    state: dict[str, Any],
    signals: StopSignals,
    address: str | None,
    resuming: bool,
    extensions: int,
    samples: int,
    writer: SweepWriter,
) -> None:
    import ray
    from ray import tune

    from ovit_ray.orchestration.common.ray_private import restore_tuner
    from ovit_ray.orchestration.common.ray_session import ray_session
    from ovit_ray.orchestration.tune.events import TuneEvents
    from ovit_ray.orchestration.tune.hosts import sweep_trial
    from ovit_ray.orchestration.tune.search import distinct_runs, make_scheduler, make_searcher, tune_domain

    with ray_session(address):
        cluster = ray.cluster_resources()
        plan: Plan = make_plan(sweep, cluster.get("CPU", 0), cluster.get("GPU", 0), strict=address is None)
        writer.display.concurrency = plan.concurrency
        storage = storage_root(sweep, out)
        name = experiment_name(state, extensions)
        r = sweep.file.resources
        kind = sweep.experiment_kind()
        if not type(kind).__module__.startswith("ovit_ray."):  # a plug-in kind: workers need not import it
            ray.cloudpickle.register_pickle_by_value(sys.modules[type(kind).__module__])
        trainable = tune.with_parameters(
            sweep_trial,
            kind=kind,
            base=sweep.base(),
            fixed=plan.fixed,
            storage=storage,
            experiment=name,
            imports=list(sweep.file.imports),
            custom=dict(r.custom),
            max_failures=r.max_failures,
            trial_cpus=plan.trial_cpus,
        )
        held = (
            {"CPU": plan.trial_cpus, "GPU": plan.trial_gpus, **r.custom}
            if plan.in_trial
            else {"CPU": DRIVER_CPU}
        )
        trainable = tune.with_resources(trainable, held)
        events = TuneEvents(writer, plan.fixed)
        searcher = make_searcher(
            sweep,
            plan.varying,
            plan.concurrency,
            _study_uri(out, state),
            state["study_name"],
            (storage, name),
            writer.ledger.objectives,
            extensions,
        )
        experiment = f"{storage.rstrip('/')}/{name}"
        if resuming and tune.Tuner.can_restore(experiment):
            tuner = restore_tuner(experiment, trainable, [events], searcher)
        else:
            optuna = sweep.file.search.algorithm == "optuna" and plan.varying
            runs = None if optuna or extensions else distinct_runs(sweep, plan.varying)
            tuner = tune.Tuner(
                trainable,
                param_space={} if optuna else {k: tune_domain(d) for k, d in plan.varying.items()},
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=make_scheduler(sweep),
                    num_samples=len(runs) if runs else samples,
                    # Every trial asks for the same resources, so an ended trial's actor (torch, timm, data
                    # already imported) can run the next: a fresh actor costs ~10 s of start-up here.
                    reuse_actors=True,
                    trial_dirname_creator=lambda t: t.trial_id,
                ),
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=storage,
                    callbacks=[events],
                    failure_config=tune.FailureConfig(max_failures=r.max_failures),
                    verbose=0,
                ),
            )
        try:
            with tune_stop_on_signal(signals):
                tuner.fit()
        finally:
            writer.interrupted(time.time())  # trials still running (a signal, an error): KILLED, time kept
        if signals.received is not None:  # Tune stopped gracefully and returned as if finished
            raise Interrupted(signals.received)
