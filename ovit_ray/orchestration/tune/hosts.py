"""The hosts a kind's trial runs on: a Ray Tune function trial (`sweep_trial` + `TuneHost`), or this process
(`LocalHost`, the `resources.local` executor). Both give the kind the same `kinds.Host`: `train` runs a
Ray-free loop on one worker here or on Ray Train workers, `target` delivers a result, `keep` stores a model.

In a Tune trial, every checkpoint a one-worker run reports carries a marker naming the run that wrote it
and the runs the trial has finished, so a restored trial skips finished runs and resumes the current one
(the independent strategy runs one run per target inside one trial).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from ovit_ray.orchestration.kinds import ExperimentKind, TrainLoop
from ovit_ray.training.hosts import LocalReporter
from ovit_ray.training.kept import KeptFolder, folder_at
from ovit_ray.training.result import TargetResult
from ovit_ray.training.spec import TrainSpec

__all__ = ["KEPT", "TRIAL_COMPLETE", "LocalHost", "TuneHost", "sweep_trial"]

TRIAL_COMPLETE = "trial_complete"  # in a trial's last report only: a trial stopped early never sends it
OVIT = "ovit"
MARKER = "ovit_trial.json"
KEPT = "kept"  # a trial's kept models: <storage>/<experiment>/<trial id>/kept/


def _add_loop(totals: dict[str, float], summary: Mapping[str, Any]) -> None:
    """A finished run's epochs and loop hours added to the trial's."""
    totals["epochs_total"] = totals.get("epochs_total", 0) + int(summary.get("total_epochs", 0))
    for unit in ("cpu_hours", "gpu_hours"):
        totals[unit] = totals.get(unit, 0.0) + float(summary.get(unit, 0.0))


class TuneHost:
    """`kinds.Host` inside a Tune function trial; `storage` is the sweep's Tune storage."""

    def __init__(
        self, trial_id: str, kept: str, storage: str, custom: Mapping[str, float], max_failures: int
    ):
        from ray import tune

        self.trial_id, self.kept, self.storage = trial_id, folder_at(kept), storage
        self.custom, self.max_failures = dict(custom), max_failures
        marker: dict[str, Any] = {"finished": [], "loop": {}}
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                marker = json.loads((Path(directory) / MARKER).read_text())
        self.finished: list[str] = list(marker["finished"])
        self.loop: dict[str, float] = dict(marker["loop"])

    def _report(self, run: str, metrics: Mapping[str, Any], checkpoint: Any = None) -> None:
        """Tune report whose checkpoint remembers which run wrote it and what the trial had finished."""
        from ray import tune

        if checkpoint is not None:
            marker = {"run": run, "finished": self.finished, "loop": self.loop}
            (Path(checkpoint.path) / MARKER).write_text(json.dumps(marker))
        tune.report(dict(metrics), checkpoint=checkpoint)

    @staticmethod
    def _written_by(run: str, directory: Path) -> bool:
        return bool(json.loads((directory / MARKER).read_text())["run"] == run)

    def train(
        self, loop: TrainLoop, config: Mapping[str, Any], spec: TrainSpec, epochs: int, run: str
    ) -> dict[str, Any]:
        from ray import tune

        from ovit_ray.orchestration.common.logs import show_logs
        from ovit_ray.orchestration.train.reporter import RayReporter

        if run in self.finished:
            return {}
        if spec.workers == 1:
            show_logs()
            reporter = RayReporter(
                partial(self._report, run),
                tune.get_checkpoint,
                0,
                1,
                self.kept,
                accept=partial(self._written_by, run),
                checkpoint_type=tune.Checkpoint,
            )
            summary = loop(config, reporter)
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            from ovit_ray.orchestration.train.job import torch_trainer

            trainer = torch_trainer(
                {"loop": loop, "config": config, "kept": self.kept.uri("").rstrip("/")},
                spec,
                name=f"{self.trial_id}-{run}",  # deterministic: a restored trial finds its run
                storage_path=f"{self.storage.rstrip('/')}/train",
                max_failures=self.max_failures,
                callbacks=[TuneReportCallback()],
                custom=self.custom,
            )
            summary = dict(trainer.fit().return_value["summary"])  # type: ignore[attr-defined]
        self.finished.append(run)
        _add_loop(self.loop, summary)
        return summary

    def target(self, result: TargetResult) -> None:
        from ray import tune

        tune.report({OVIT: {"target": result.payload()}})

    def progress(self, text: str) -> None:
        """Tune counts every report as an iteration: a status line is not worth one."""

    def keep(self, path: str | Path) -> str:
        """Copy a local file into the trial's kept folder; its location there."""
        import pyarrow.fs

        target = self.kept.uri(Path(path).name)
        self.kept.filesystem.create_dir(self.kept.path, recursive=True)
        pyarrow.fs.copy_files(
            str(path), f"{self.kept.path}/{Path(path).name}", destination_filesystem=self.kept.filesystem
        )
        return target


def sweep_trial(
    knobs: dict[str, Any],
    *,
    kind: ExperimentKind,
    base: Mapping[str, Any],
    fixed: Mapping[str, Any],
    storage: str,
    experiment: str,
    imports: list[str],
    custom: Mapping[str, float],
    max_failures: int,
    trial_cpus: float,
) -> None:
    """The Tune function trainable of every sweep: the trial's spec, its kind's run, then the last report."""
    import importlib

    from ray import tune

    for module in imports:
        if module != type(kind).__module__:  # the kind's own module travels with it (`driver`)
            importlib.import_module(module)
    began = time.perf_counter()
    spec = kind.spec.model_validate({**base, **fixed, **knobs})
    trial_id = tune.get_context().get_trial_id()
    host = TuneHost(
        trial_id, f"{storage.rstrip('/')}/{experiment}/{trial_id}/{KEPT}", storage, custom, max_failures
    )
    kind.run(spec, host)
    spent = (time.perf_counter() - began) * trial_cpus / 3600
    loop = dict(host.loop) or {"cpu_hours": spent, "gpu_hours": 0.0}
    tune.report({TRIAL_COMPLETE: 1, OVIT: {"done": loop}})


class _Forward(LocalReporter):
    """A local run's reports, to the driver's writer as they come."""

    def __init__(self, root: Path, kept: KeptFolder, send: Callable[[Mapping[str, Any]], None]):
        super().__init__(root)
        self._kept, self._send = kept, send

    def kept_folder(self) -> KeptFolder:
        return self._kept

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        from ovit_ray.orchestration.train.reporter import pack

        super().report(metrics, checkpoint_dir)
        self._send(pack(self.history[-1])[OVIT])


class LocalHost:
    """`kinds.Host` in this process: one worker, checkpoints under `root`, reports straight to `send`."""

    def __init__(self, trial_id: str, root: Path, send: Callable[[Mapping[str, Any]], None]):
        self.trial_id, self.root, self.send = trial_id, root, send
        self.kept = folder_at(str(root / KEPT))
        self.loop: dict[str, float] = {}

    def train(
        self, loop: TrainLoop, config: Mapping[str, Any], spec: TrainSpec, epochs: int, run: str
    ) -> dict[str, Any]:
        if spec.workers != 1:
            raise ValueError(f"resources.local: runs one worker in this process, got workers {spec.workers}")
        summary = loop(config, _Forward(self.root / run, self.kept, self.send))
        _add_loop(self.loop, summary)
        return summary

    def target(self, result: TargetResult) -> None:
        self.send({"target": result.payload()})

    def progress(self, text: str) -> None:
        self.send({"progress": text})

    def keep(self, path: str | Path) -> str:
        target = Path(self.kept.path) / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).resolve() != target.resolve():
            shutil.copy2(path, target)
        return str(target)
