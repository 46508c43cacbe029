"""Hosts of the gradual loop: what it needs from Ray Train, Ray Tune or a plain process (`Reporter`),
the single-process host (`LocalReporter`), and a cheap end-to-end check of a saved resume state."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

from ovit_ray.training.kept import BEST_FOLDER, KeptFolder, local_folder

STATE_FILE = "state.pt"


class CorruptCheckpointError(ValueError):
    """A checkpoint's resume state cannot be read (truncated upload, full disk, bit rot)."""


def verify_state(directory: str | os.PathLike) -> Path:
    """The checkpoint's state file, checked end to end (the CRC of every record of torch's zip
    format) without unpickling it, so a host can pick a readable checkpoint cheaply."""
    path = Path(directory) / STATE_FILE
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as err:
        raise CorruptCheckpointError(f"checkpoint {path} cannot be read: {err}") from None
    if bad is not None:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt: record {bad} fails its CRC check")
    return path


class Reporter(Protocol):
    """What the loop needs from its host (Ray Train, Ray Tune, or nothing at all)."""

    world_rank: int
    world_size: int

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        """Called by every worker once per epoch; rank 0 passes the checkpoint directory. The files in
        its `best/` folder must end up in `kept_folder()` once the checkpoint is persisted, and a target
        result in the metrics names its checkpoint there (`kept_target`)."""

    def checkpoint_dir(self) -> AbstractContextManager[str | None]:
        """The latest reported checkpoint as a local directory (None on a fresh start)."""

    def kept_folder(self) -> KeptFolder | None:
        """The run's persistent `best/` folder (rank 0, once a checkpoint was reported or resumed)."""


class LocalReporter:
    """Single-process host: checkpoints are copied under `root`, best files kept in `root/best`,
    metrics kept in `history`."""

    world_rank = 0
    world_size = 1

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []

    def report(self, metrics: Mapping[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(kept_target(metrics, self.kept_folder()))
        if checkpoint_dir is not None:
            target = self.root / f"checkpoint_{len(list(self.root.glob('checkpoint_*'))):06d}"
            shutil.copytree(checkpoint_dir, target)
            self.kept_folder().promote(str(target))

    @contextmanager
    def checkpoint_dir(self) -> Iterator[str | None]:
        found = sorted(self.root.glob("checkpoint_*"))
        yield str(found[-1]) if found else None

    def kept_folder(self) -> KeptFolder:
        return local_folder(self.root / BEST_FOLDER)


def kept_target(metrics: Mapping[str, Any], kept: KeptFolder | None) -> dict[str, Any]:
    """`metrics` whose target result (if any) names its checkpoint by the kept folder's location instead
    of the bare file name the loop knows."""
    target = metrics.get("target")
    if not target or not target.get("kept_model") or kept is None:
        return dict(metrics)
    return {**metrics, "target": {**target, "kept_model": kept.uri(target["kept_model"])}}


def save_state(directory: Path, state_dicts: Mapping[str, Any], rng: Any, meta: Mapping[str, Any]) -> None:
    """A resumable checkpoint: the state dicts, every worker's RNG state, and the loop's counters as JSON."""

    torch.save({**state_dicts, "rng": rng, "meta": json.dumps(meta)}, directory / STATE_FILE)


def load_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint saved by `save_state`, verified first; tensors only (`weights_only`), `meta` parsed."""

    blob = torch.load(verify_state(directory), weights_only=True, map_location="cpu")
    return {**blob, "meta": json.loads(blob["meta"])}
