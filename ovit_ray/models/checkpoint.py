"""Checkpoint files (weights + pruning masks + JSON meta) and the cache directory.

Two formats: `.safetensors` (keys `model.<k>` / `mask.<k>`, meta as a JSON string in the file's
metadata) and `.pt` (a `torch.save`d dict of tensors + a JSON string, read back with
`weights_only=True` so loading a checkpoint can never execute code). Writes are atomic
(tmp file + `os.replace`) so a crashed or concurrent writer never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

if TYPE_CHECKING:  # torch and safetensors are imported by the functions that read or write files:
    import torch  # `ovit_ray.models` also answers light questions (preset names, the cache dir)
    from torch import nn

SUFFIXES = (".safetensors", ".pt")
_META_KEY = "ovit_ray_meta"

Checkpoint = tuple[dict[str, "torch.Tensor"], dict[str, "torch.Tensor"], dict[str, Any]]


def cache_dir() -> Path:
    """`$OVIT_RAY_CACHE` if set, else the platform's user cache dir; created on demand."""
    path = Path(os.environ.get("OVIT_RAY_CACHE") or platformdirs.user_cache_dir("ovit-ray"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _suffix(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"checkpoint {path}: unsupported suffix {path.suffix!r}; use one of {SUFFIXES}")
    return path.suffix


def _cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write `model`'s weights, optional masks and JSON-serialisable meta atomically to `path`."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    suffix = _suffix(path)
    state, mask_state = _cpu(model.state_dict()), _cpu(masks or {})
    meta_json = json.dumps(meta or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".safetensors":
            tensors = {f"model.{k}": v for k, v in state.items()}
            tensors.update({f"mask.{k}": v for k, v in mask_state.items()})
            save_file(tensors, tmp, metadata={_META_KEY: meta_json})
        else:
            torch.save({"model": state, "masks": mask_state, "meta": meta_json}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta_json = (f.metadata() or {}).get(_META_KEY, "{}")
        for key in f.keys():
            if key.startswith("mask."):
                masks[key.removeprefix("mask.")] = f.get_tensor(key)
            else:  # plain state-dict files (e.g. from timm) have no prefix at all
                state[key.removeprefix("model.")] = f.get_tensor(key)
    return state, masks, json.loads(meta_json)


def _read_pt(path: Path) -> Checkpoint:
    import torch

    blob = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(blob, dict) or "model" not in blob:
        raise ValueError("not an ovit-ray checkpoint (expected a dict with a 'model' entry)")
    return dict(blob["model"]), dict(blob.get("masks", {})), json.loads(blob.get("meta", "{}"))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read `(state_dict, masks, meta)` from `path` on CPU."""
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    reader = _read_safetensors if suffix == ".safetensors" else _read_pt
    try:
        return reader(path)
    except Exception as err:  # every format/parse failure means the same thing to the caller
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
