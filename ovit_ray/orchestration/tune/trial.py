"""One sweep trial: the gradual run(s) of one knob setting, inside a Ray Tune function trial.

Two hosts for the same loop (`training.gradual.run_gradual`): with one worker the loop runs right here
in the Tune trial (the light path: no Train start-up, ~1.5 s per trial instead of ~15-20 s); with more,
this function is the Train V2 driver of a `TorchTrainer` that reports through `TuneReportCallback`.
The `independent` strategy runs one gradual run per target inside the trial; each run's checkpoints
are tagged with its index, so a restored trial skips finished runs and resumes the current one.
The trial ends with one final report carrying the objectives, the per-target rows and
`trial_complete`; a trial stopped early (ASHA) never sends it, which is how the searcher tells it
from a finished one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Checkpoint

from ovit_ray.orchestration.common.logs import show_logs
from ovit_ray.orchestration.specs.run import GradualConfig
from ovit_ray.orchestration.specs.sweep import SweepConfig
from ovit_ray.training.spec import Schedule

TRIAL_COMPLETE = "trial_complete"
ROWS_KEY = "rows_json"
MARKER = "ovit_sweep_run.json"
# Tune's status table shows the first four metrics of the first result it sees: every report leads with
# these, and the final one carries them too (values at the last target), so no finished row is blank.
PROGRESS_KEYS = ("val_top1", "top1", "sparsity", "epochs_done")


def trial_schedules(config: GradualConfig, strategy: str) -> list[Schedule]:
    """The gradual runs of a trial: one through every target, or one per target."""
    if strategy == "sweep":
        return [config.schedule()]
    return [config.independent_schedule(i) for i in range(len(config.targets or []))]


def _marked_report(
    index: int,
    finished: list[dict[str, Any]],
    metrics: Mapping[str, Any],
    checkpoint: Checkpoint | None = None,
) -> None:
    """Tune report whose checkpoint remembers which run wrote it and the summaries of the runs before."""
    if checkpoint is not None:
        (Path(checkpoint.path) / MARKER).write_text(json.dumps({"index": index, "finished": finished}))
    lead = {k: metrics[k] for k in PROGRESS_KEYS if k in metrics}
    tune.report({**lead, **metrics, "run_index": index}, checkpoint=checkpoint)


def _latest_marker() -> dict[str, Any]:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return {"index": 0, "finished": []}
    with checkpoint.as_directory() as directory:
        return json.loads((Path(directory) / MARKER).read_text())


def _written_by(index: int, directory: Path) -> bool:
    """Did run `index` write this checkpoint? (A new run must not resume the previous one.)"""
    return json.loads((directory / MARKER).read_text())["index"] == index


def _run_light(
    config: GradualConfig, schedule: Schedule, index: int, finished: list[dict[str, Any]]
) -> dict[str, Any]:
    from ovit_ray.orchestration.train.reporter import RayReporter
    from ovit_ray.training.gradual import run_gradual

    show_logs()  # the per-epoch line, through the trial's stderr to the driver's console
    reporter = RayReporter(
        partial(_marked_report, index, finished),
        tune.get_checkpoint,
        0,
        1,
        schedule.total_epochs,
        accept=partial(_written_by, index),
        checkpoint_type=Checkpoint,
    )
    return run_gradual(config, schedule, reporter)


def _run_train(
    config: GradualConfig, schedule: Schedule, name: str, storage: str, custom: Mapping[str, float]
) -> dict[str, Any]:
    """Train V2 inside Tune: a TorchTrainer per run, rank-0 metrics forwarded by TuneReportCallback."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from ovit_ray.orchestration.train.job import build_trainer

    trainer = build_trainer(
        config, schedule, name=name, storage_path=storage, callbacks=[TuneReportCallback()], custom=custom
    )
    return dict(trainer.fit().return_value)  # type: ignore[attr-defined]


def run_one(
    config: GradualConfig,
    schedule: Schedule,
    *,
    index: int,
    finished: list[dict[str, Any]],
    storage: str,
    custom: Mapping[str, float],
) -> dict[str, Any]:
    """THE adapter to issue 3's gradual job: one gradual run in this trial, its summary back. Best
    checkpoints go out with the reported checkpoints into the trial's (or Train run's) storage folder."""
    if config.workers == 1:
        return _run_light(config, schedule, index, finished)
    name = f"{tune.get_context().get_trial_id()}-run{index}"  # deterministic: a restored trial finds its runs
    return _run_train(config, schedule, name, f"{storage.rstrip('/')}/train", custom)


def trial_rows(strategy: str, summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-target rows of one trial (every knob and metric; trial-level totals added by the caller)."""
    rows = []
    for summary in summaries:
        for target in summary["targets"]:
            rows.append(
                {
                    "strategy": strategy,
                    **{
                        k: target[k]
                        for k in (
                            "target_sparsity",
                            "achieved_sparsity",
                            "top1",
                            "val_top1",
                            "best_epoch",
                            "epochs",
                            "cpu_hours",
                            "gpu_hours",
                            "flops_dense",
                            "flops_nonzero",
                            "flops_reduction",
                        )
                    },
                    "best_checkpoint": target["checkpoint"],
                    "run_epochs": summary["total_epochs"],
                }
            )
    return rows


def final_metrics(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The objectives a searcher can use (val_* for selection; top1_* are on test, for reporting),
    plus the compute totals of the trial."""
    final = max(rows, key=lambda r: r["target_sparsity"])
    loop = sum(s["loop_seconds"] for s in summaries)
    return {
        "top1_final": final["top1"],
        "top1_mean": sum(r["top1"] for r in rows) / len(rows),
        "val_top1_final": final["val_top1"],
        "val_top1_mean": sum(r["val_top1"] for r in rows) / len(rows),
        "epochs_total": sum(s["total_epochs"] for s in summaries),
        "cpu_hours": sum(s["cpu_hours"] for s in summaries),
        "gpu_hours": sum(s["gpu_hours"] for s in summaries),
        "loop_seconds": loop,
        "trial_seconds": wall,
        "overhead_seconds": wall - loop,
    }


def sweep_trial(knobs: dict[str, Any], *, sweep: SweepConfig, fixed: Mapping[str, Any], storage: str) -> None:
    """Tune function trainable: `knobs` are the sampled values, `fixed` the knobs that do not vary."""
    began = time.perf_counter()
    knobs = {**fixed, **knobs}
    config = sweep.trial_config(knobs)  # the one validation of this trial's knobs in this process
    finished: list[dict[str, Any]] = _latest_marker()["finished"]
    for index, schedule in enumerate(trial_schedules(config, knobs["strategy"])):
        if index < len(finished):
            continue
        finished = [
            *finished,
            run_one(
                config,
                schedule,
                index=index,
                finished=finished,
                storage=storage,
                custom=sweep.resources.custom,
            ),
        ]
    rows = trial_rows(knobs["strategy"], finished)
    metrics = final_metrics(rows, finished, time.perf_counter() - began)
    last = max(rows, key=lambda r: r["target_sparsity"])
    progress = {
        "val_top1": last["val_top1"],
        "top1": last["top1"],
        "sparsity": last["achieved_sparsity"],
        "epochs_done": metrics["epochs_total"],
    }
    tune.report({**progress, **metrics, TRIAL_COMPLETE: 1, ROWS_KEY: json.dumps(rows)})
