"""A training loop's host inside Ray: reports metrics and checkpoints through Ray Train (or a Tune function
trial), resumes from the newest readable checkpoint, and keeps best models in the trial's kept folder in the
sweep's storage, where no checkpoint retention removes them and every node can read them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray.train import Checkpoint

from ovit_ray.training.hosts import CorruptCheckpointError, kept_target, verify_state
from ovit_ray.training.kept import KeptFolder

log = logging.getLogger(__name__)

OVIT = "ovit"  # the key of our payload in a Tune result: {"epoch": {...}, "target": {...}, ...}


def pack(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A loop's epoch metrics as a Tune result: `val_top1` at the top (what ASHA reads), the rest under
    `ovit` unchanged (numbers of the epoch, and the target result of a window that closed)."""
    epoch = {k: v for k, v in metrics.items() if k != "target"}
    payload: dict[str, Any] = {"epoch": epoch}
    if metrics.get("target"):
        payload["target"] = metrics["target"]
    return {"val_top1": metrics.get("val_top1"), OVIT: payload}


class RayReporter:
    """`training.hosts.Reporter` for Ray Train workers and (with ray.tune's functions) Tune function trials."""

    def __init__(
        self,
        report: Callable[..., None],
        get_checkpoint: Callable[[], Checkpoint | None],
        world_rank: int,
        world_size: int,
        kept: KeptFolder,
        *,
        accept: Callable[[Path], bool] | None = None,
        checkpoint_type: type[Checkpoint] = Checkpoint,
    ):
        """`accept(directory)` tells this run's checkpoints from older ones in the same folder (a fallback
        never crosses into another run's). Tune trials pass `ray.tune.Checkpoint`: Ray 2.60 warns on every
        report that gets a `ray.train.Checkpoint` inside a Tune function."""
        self._report, self._get_checkpoint, self._accept = report, get_checkpoint, accept
        self._checkpoint_type = checkpoint_type
        self.world_rank, self.world_size = world_rank, world_size
        self._kept = kept
        self.targets: list[dict[str, Any]] = []  # the target results this reporter delivered

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        metrics = kept_target(metrics, self._kept)
        if self.world_rank == 0:
            log.info(
                "epoch %d  sparsity %.4f  test top-1 %.4f  val top-1 %.4f",
                metrics["epoch"] + 1,
                metrics.get("sparsity", 0.0),
                metrics["top1"],
                metrics["val_top1"],
            )
            if metrics.get("target"):
                self.targets.append(metrics["target"])
        checkpoint = None if checkpoint_dir is None else self._checkpoint_type.from_directory(checkpoint_dir)
        self._report(pack(metrics), checkpoint=checkpoint)
        if checkpoint is not None:  # after the report: promote the persisted copy, in the run's storage
            self._promote(self._get_checkpoint())

    def _promote(self, persisted: Checkpoint | None) -> None:
        if persisted is not None and self.world_rank == 0:
            self._kept.promote_from(persisted.filesystem, persisted.path)

    def kept_folder(self) -> KeptFolder | None:
        return self._kept if self.world_rank == 0 else None

    @contextmanager
    def checkpoint_dir(self) -> Iterator[str | None]:
        """The newest readable checkpoint of this run: a corrupt one is named and skipped, so a
        crash while one was being written costs one more epoch instead of the run."""
        corrupt: list[str] = []
        for checkpoint in checkpoint_history(self._get_checkpoint()):
            with checkpoint.as_directory() as directory:
                if self._accept is not None and not self._accept(Path(directory)):
                    break
                try:
                    verify_state(directory)
                except CorruptCheckpointError as err:
                    log.error("%s; falling back to the previous checkpoint", err)
                    corrupt.append(checkpoint.path)
                    continue
                self._promote(checkpoint)  # a crash between a report and its promotion loses nothing
                yield directory
                return
        if corrupt:
            raise CorruptCheckpointError(
                f"no readable checkpoint left to resume from (corrupt: {', '.join(corrupt)})"
            )
        yield None


def checkpoint_history(latest: Checkpoint | None) -> list[Checkpoint]:
    """`latest`, then the older checkpoints in its folder, newest first (Tune and Train name them
    `checkpoint_<index or timestamp>`, so name order is time order); works on any pyarrow filesystem."""
    if latest is None:
        return []
    if latest.filesystem is None:  # not persisted anywhere we can list
        return [latest]
    parent, name = latest.path.rstrip("/").rsplit("/", 1)
    infos = latest.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
    older = sorted(
        (
            info.path
            for info in infos
            if info.type == pyarrow.fs.FileType.Directory
            and info.base_name.startswith("checkpoint_")
            and info.base_name < name
        ),
        reverse=True,
    )
    return [latest, *(Checkpoint(path, latest.filesystem) for path in older)]
