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
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
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
        self.promote_from(self.filesystem, checkpoint_path)

    def promote_from(self, filesystem: pyarrow.fs.FileSystem | None, checkpoint_path: str) -> None:
        """`promote` from a checkpoint on `filesystem` (Ray's storage; this folder's when None)."""
        source_fs = filesystem or self.filesystem
        source = f"{checkpoint_path.rstrip('/')}/{BEST_FOLDER}"
        if source_fs.get_file_info(source).type != pyarrow.fs.FileType.Directory:
            return
        self.filesystem.create_dir(self.path, recursive=True)
        for info in source_fs.get_file_info(pyarrow.fs.FileSelector(source)):
            target = f"{self.path}/{info.base_name}"
            if self.filesystem.get_file_info(target).size != info.size:
                pyarrow.fs.copy_files(info.path, f"{target}.part", source_fs, self.filesystem)
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


def folder_at(uri: str) -> KeptFolder:
    """The kept folder at a local path or a storage URI (s3://, gs://, ...)."""
    filesystem, path = (
        pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (pyarrow.fs.LocalFileSystem(), uri)
    )
    return KeptFolder(filesystem, path)


@contextmanager
def local_file(uri: str) -> Iterator[str]:
    """A kept file as a local path while the block runs: itself on a local (or mounted) disk, else a
    temporary download from its storage (s3://, gs://, ...)."""
    if "://" not in uri:
        yield uri
        return
    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    with tempfile.TemporaryDirectory(prefix="ovit-kept-") as folder:
        local = os.path.join(folder, path.rsplit("/", 1)[-1])
        pyarrow.fs.copy_files(path, local, source_filesystem=filesystem)
        yield local
