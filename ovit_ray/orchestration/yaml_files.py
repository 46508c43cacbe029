"""Reading user YAML files (configs, sweeps, search spaces, cluster files): one clear line on any failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def clip_line(line: str, limit: int = 300) -> str:
    """A problem line stays one readable line even when the bad value is huge."""
    line = " ".join(line.split())
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line) - limit} more characters)"


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """`yaml.safe_load` of a file that must hold a mapping; FileNotFoundError / ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as err:  # ValueError: e.g. a 5000-digit int
        raise ValueError(clip_line(f"{path}: not valid YAML ({' '.join(str(err).split())})")) from None
    except RecursionError:
        raise ValueError(f"{path}: not valid YAML (nested too deeply)") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a {what} must be a YAML mapping of key: value, got {type(loaded).__name__}")
    return loaded
