"""Atomic file writes: a reader (another process, a resumed sweep, `ovit-ray report`) sees the old
file or the new one, never half of one, and a crash mid-write leaves no stray temporary file behind.

The temporary file sits next to the target (same filesystem, so `os.replace` is one rename) and is
made readable by others (mode 0644) like any result file: `mkstemp` would leave it owner-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

FILE_MODE = 0o644


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """`write(tmp)` fills a temporary file next to `path`, which then replaces `path` in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # the writer (e.g. pyarrow) may have removed it
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path: str | os.PathLike[str], data: Any, indent: int | None = 1) -> Path:
    """JSON with `default=str` (paths, numpy scalars and the like become strings)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, default=str))
