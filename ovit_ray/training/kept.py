"""Best checkpoints that outlive a run's rolling resume checkpoints, on any pyarrow filesystem.

A gradual run writes each new best-of-window model into the `best/` folder of the checkpoint it
reports; the host (Ray Train, Ray Tune, or `LocalReporter`) persists that checkpoint to the run's
storage, then copies its `best/` files into the run's own `best/` folder beside the checkpoints
(`<storage>/<run>/best/`). That folder is not subject to checkpoint retention, lives on the storage
path (shared on clusters), and is never inside Ray's temporary session folder, so a result row can
point at it after `ray stop`, after the temp folder is deleted, and from any node.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

import pyarrow.fs

BEST_FOLDER = "best"
_SCHEMES = {"s3": "s3", "gcs": "gs", "hdfs": "hdfs", "abfs": "abfs"}


def storage_uri(filesystem: pyarrow.fs.FileSystem, path: str) -> str:
    """A path a user (and `pyarrow.fs.FileSystem.from_uri`) can open: plain for local disks."""
    if isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        return path
    return f"{_SCHEMES.get(filesystem.type_name, filesystem.type_name)}://{path}"


@dataclass(frozen=True)
class KeptFolder:
    """A run's persistent `best/` folder."""

    filesystem: pyarrow.fs.FileSystem
    path: str

    @classmethod
    def beside(cls, filesystem: pyarrow.fs.FileSystem, checkpoint_path: str) -> KeptFolder:
        """The folder next to a persisted checkpoint (`<run>/checkpoint_x` -> `<run>/best`)."""
        return cls(filesystem, f"{checkpoint_path.rstrip('/').rsplit('/', 1)[0]}/{BEST_FOLDER}")

    def uri(self, name: str) -> str:
        return storage_uri(self.filesystem, f"{self.path}/{name}")

    def promote(self, checkpoint_path: str) -> None:
        """Copy the persisted checkpoint's `best/` files here (idempotent: a resume repeats it safely)."""
        source = f"{checkpoint_path.rstrip('/')}/{BEST_FOLDER}"
        if self.filesystem.get_file_info(source).type != pyarrow.fs.FileType.Directory:
            return
        self.filesystem.create_dir(self.path, recursive=True)
        for info in self.filesystem.get_file_info(pyarrow.fs.FileSelector(source)):
            target = f"{self.path}/{info.base_name}"
            if self.filesystem.get_file_info(target).size != info.size:
                self.filesystem.copy_file(info.path, f"{target}.part")
                self.filesystem.move(f"{target}.part", target)

    def discard(self, keep: Collection[str], groups: Collection[str]) -> None:
        """Delete superseded files: names starting with one of `groups` that are not in `keep`."""
        if self.filesystem.get_file_info(self.path).type != pyarrow.fs.FileType.Directory:
            return
        for info in self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.path)):
            if info.base_name not in keep and any(info.base_name.startswith(g) for g in groups):
                self.filesystem.delete_file(info.path)


def local_folder(path: str | os.PathLike) -> KeptFolder:
    return KeptFolder(pyarrow.fs.LocalFileSystem(), os.fspath(path))
