"""Deployment files of a model: ONNX (run by ONNX Runtime) and `torch.export` programs (`.pt2`), each
written with a dynamic batch dimension and read back by its own runtime as a module.

Why here and nothing more: writing a file and running one need torch and the runtime only; which model to
write, and whether its logits match, is the caller's business (`orchestration.train.export`).
ONNX needs the optional `deploy` extra (onnx, onnxruntime, onnxscript); `torch.export` is part of torch.

ToMe token merging sorts its token pairs with a stable sort, which torch's ONNX exporter does not translate;
ONNX's TopK breaks ties by the lower index, which is exactly a stable sort, so it is translated here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "DEPLOY_EXTRA",
    "FORMATS",
    "RUNTIME_MODULES",
    "MissingRuntimeError",
    "load_runtime_model",
    "require_runtime",
    "write_format",
    "write_onnx",
    "write_pt2",
]

FORMATS = ("safetensors", "onnx", "pt2")
DEPLOY_EXTRA = "deploy"
RUNTIME_MODULES = {"onnx": ("onnx", "onnxruntime", "onnxscript"), "pt2": (), "safetensors": ()}
MAX_BATCH = 1 << 16  # the dynamic batch dimension's upper bound in the exported programs
ONNX_OPSET = 18


class MissingRuntimeError(ValueError):
    """A format whose writer or runtime is not installed: one line naming the extra to install."""


def require_runtime(fmt: str) -> None:
    """Refuse a format whose packages are missing, before anything is written."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    missing = [name for name in RUNTIME_MODULES[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingRuntimeError(
            f"--format {fmt} needs {', '.join(missing)}: pip install 'ovit-ray[{DEPLOY_EXTRA}]'"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters print progress on stdout, which belongs to the command's result."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """`write(tmp)` then rename into place: a failed export leaves no half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # like every result file (mkstemp makes it owner-only)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with _quiet():
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def write_pt2(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> None:
    """The model as a `torch.export` program (any batch size), loadable by `torch.export.load`."""
    program = _program(model, example)
    _atomic(Path(path), lambda tmp: torch.export.save(program, tmp))


def _stable_sort(self: Any, stable: bool = True, dim: int = -1, descending: bool = False) -> Any:
    """aten.sort.stable as ONNX TopK over the whole axis (ties: the lower index first, as a stable sort)."""
    from onnxscript import opset18 as op

    axis = dim if dim >= 0 else dim + len(self.shape)
    count = op.Shape(self, start=axis, end=axis + 1)
    return op.TopK(self, count, axis=axis, largest=1 if descending else 0, sorted=1)


def write_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> None:
    """The model as ONNX (opset 18, input `images`, output `logits`, any batch size)."""
    require_runtime("onnx")
    with _quiet():
        program = torch.onnx.export(
            model.eval(),
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: "batch"},),
            opset_version=ONNX_OPSET,
            custom_translation_table={torch.ops.aten.sort.stable: _stable_sort},
        )
    if program is None:  # only the legacy (non-dynamo) exporter returns nothing
        raise RuntimeError("torch.onnx.export returned no program")
    _atomic(Path(path), lambda tmp: program.save(tmp, external_data=False))


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, str | os.PathLike], None]] = {
    "onnx": write_onnx,
    "pt2": write_pt2,
}


def write_format(fmt: str, model: nn.Module, example: torch.Tensor, path: str | os.PathLike) -> None:
    """Write `model` as `fmt` (onnx or pt2); `example` is one input batch (its batch size is not fixed)."""
    if fmt not in WRITERS:
        raise ValueError(f"no writer for format {fmt!r}; writers: {', '.join(WRITERS)}")
    WRITERS[fmt](model, example, path)


class _OnnxModule(nn.Module):
    """An ONNX Runtime CPU session as a module: float32 NCHW images in, logits out."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: images.detach().to("cpu", torch.float32).contiguous().numpy()}
        return torch.from_numpy(self.session.run(None, feed)[0])


class _ProgramModule(nn.Module):
    """A loaded `torch.export` program as a module (its own `train`/`eval` are not supported)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        if not zipfile.is_zipfile(path):
            raise ValueError(f"cannot load {path}: not a torch.export archive (.pt2 is a zip file)")
        logger = logging.getLogger("torch.export")  # it logs a traceback before raising on a damaged file
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            self.program = torch.export.load(str(path)).module()
        finally:
            logger.setLevel(level)

    def train(self, mode: bool = True) -> _ProgramModule:
        return self  # an exported program is traced in eval mode already

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.program(images)


def load_runtime_model(path: str | os.PathLike, *, threads: int | None = None) -> nn.Module:
    """The file's own runtime as a module: `.onnx` through ONNX Runtime (CPU; `threads` intra-op threads),
    `.pt2` through `torch.export.load`."""
    path = Path(path)
    if path.suffix == ".onnx":
        require_runtime("onnx")
        return _OnnxModule(path, threads)
    if path.suffix == ".pt2":
        return _ProgramModule(path)
    raise ValueError(f"{path}: not a deployment file (.onnx or .pt2)")
