"""The model card of an exported model read back, validated at the edge, and the model it describes built.

`ovit-ray export` writes the card (JSON, `FILE.json`) and its Markdown (`FILE.md`, `card_markdown`) beside
the exported files; `ovit-ray evaluate` and the MLflow pyfunc wrapper build the model from it. A card is
user input once it sits on disk, so `read_card` validates it (a pydantic model: types, a known timm
architecture, no kwargs that load weights or files, bounded integers), and `build_model` first builds the
model on PyTorch's meta device (no memory) and compares it tensor by tensor with the file's header: a
doctored card (a 10^7-wide model, another head) is one error line before anything big is allocated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from ovit_ray.orchestration.common.yaml_files import clip_line, short_repr
from ovit_ray.training.spec import MAX_SEED

MAX_CARD_BYTES = 10 << 20  # a card is a few KB; anything this big is not one
MAX_BLOCKS = 1024  # `depth` and per-block lists: timm's deepest ViT has 48 blocks
MAX_INT = 1 << 16  # every other integer of the architecture: widths, image size, classes, patch size
# timm kwargs a model divides by or sizes tensors with: 0 is a ZeroDivisionError or an empty model inside timm
POSITIVE_KWARGS = ("num_classes", "embed_dim", "num_heads", "patch_size", "img_size")
# timm.create_model kwargs that fetch or read weights and files, or change what the model returns
LOADING_KWARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "pretrained_strict",
        "checkpoint_path",
        "cache_dir",
        "features_only",
        "out_indices",
    }
)


def card_path(path: str | os.PathLike) -> Path:
    """The card beside an exported file: `best.safetensors` (or `.onnx`, `.pt2`) -> `best.json`."""
    return Path(path).with_suffix(".json")


def markdown_path(path: str | os.PathLike) -> Path:
    return Path(path).with_suffix(".md")


def _ints(value: Any) -> list[int]:
    if isinstance(value, list | tuple):
        return [i for v in value for i in _ints(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


class Widths(BaseModel):
    """Heads and neurons kept per block (a shrunk model), and ToMe's merges per block."""

    model_config = ConfigDict(extra="allow")
    heads: list[int] = Field(max_length=MAX_BLOCKS)
    neurons: list[int] = Field(max_length=MAX_BLOCKS)
    merge_r: list[int] | None = Field(None, max_length=MAX_BLOCKS)

    @model_validator(mode="after")
    def _bounded(self) -> Widths:
        lists = [self.heads, self.neurons] + ([self.merge_r] if self.merge_r else [])
        if len({len(x) for x in lists}) > 1:
            raise ValueError("heads, neurons and merge_r need one entry per block each")
        if any(not 0 <= v <= MAX_INT for x in lists for v in x):
            raise ValueError(f"per-block counts must be in [0, {MAX_INT}]")
        return self


class DepthWidths(Widths):
    """A depth-pruned model's blocks: widths plus each attention's and MLP's state."""

    attention: list[str] = Field(max_length=MAX_BLOCKS)
    mlp: list[str] = Field(max_length=MAX_BLOCKS)


class ModelCard(BaseModel):
    """The card fields the model is built and evaluated from; the others are descriptive and kept as they are."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    timm_model: str
    timm_kwargs: dict[str, Any]
    structure: Widths | None = None
    depth_structure: DepthWidths | None = None
    model: str
    dataset: str
    data_root: str | None = None
    split_seed: int = Field(0, ge=0, le=MAX_SEED)  # a card from a run has no larger seed
    prunable_params: list[str] = Field(default_factory=list)
    top1: float = Field(ge=0, le=1)
    val_top1: float | None = Field(None, ge=0, le=1)

    @field_validator("timm_model")
    @classmethod
    def _known(cls, name: str) -> str:
        import timm

        if not timm.is_model(name):
            raise ValueError(f"{name!r} is not a timm architecture")
        return name

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, name: str) -> str:
        from ovit_ray.data import DATASET_NAMES

        if name not in DATASET_NAMES:
            raise ValueError(f"{name!r} is not one of {', '.join(DATASET_NAMES)}")
        return name

    @field_validator("timm_kwargs")
    @classmethod
    def _kwargs(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        loading = sorted(LOADING_KWARGS & set(kwargs))
        if loading:
            raise ValueError(f"{', '.join(loading)} would load weights or change the model; not allowed")
        classes = kwargs.get("num_classes")
        if not isinstance(classes, int) or isinstance(classes, bool):
            raise ValueError("needs num_classes, an int >= 1")
        for key, value in kwargs.items():
            low = 1 if key in POSITIVE_KWARGS else 0
            if low and isinstance(value, bool):  # True would build a 1-wide model that the weights still fit
                raise ValueError(f"{key} {value} is not a count")
            bound = MAX_BLOCKS if key == "depth" else MAX_INT
            if any(not low <= v <= bound for v in _ints(value)):
                raise ValueError(f"{key} {short_repr(value)} is outside [{low}, {bound}]")
        return kwargs

    def meta(self) -> dict[str, Any]:
        """The shapes `training.setup.with_structure` rebuilds the model with, as plain values."""
        parts = {"structure": self.structure, "depth_structure": self.depth_structure}
        return {name: part.model_dump(exclude_unset=True) if part else None for name, part in parts.items()}


def _first_problem(path: Path, err: ValidationError) -> str:
    problems = err.errors()
    first = problems[0]
    where = ".".join(str(x) for x in first["loc"]) or "card"
    message = first["msg"].removeprefix("Value error, ")
    got = "" if first["type"] == "missing" else f", got {short_repr(first['input'])}"
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return clip_line(f"model card {path}: {where}: {message}{got}{more}")


def read_card(path: str | os.PathLike) -> ModelCard:
    """The validated card at `path`; every problem is one ValueError line naming the field and value."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model card not found: {path} (written by `ovit-ray export` beside the model)"
        )
    size = path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise ValueError(f"model card {path}: {size} bytes, over the bound of {MAX_CARD_BYTES}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: `[[[[...` nested deep
        raise ValueError(clip_line(f"model card {path}: not JSON ({err})")) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"model card {path}: must be a JSON object (as `ovit-ray export` writes), got a {type(data).__name__}"
        )
    try:
        return ModelCard.model_validate(data)
    except ValidationError as err:
        raise ValueError(_first_problem(path, err)) from None


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape from the file's header (nothing is loaded); checkpoint prefixes dropped."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {
                key.removeprefix("model."): tuple(f.get_slice(key).get_shape())
                for key in f.keys()
                if not key.startswith("mask.")
            }
    except Exception as err:  # every parse failure means the same: not a weights file
        raise ValueError(f"cannot read {path}: {' '.join(str(err).split())[:200]}") from None


def build_model(card: ModelCard, shapes: Mapping[str, tuple[int, ...]], what: str) -> nn.Module:
    """The card's model, rebuilt to its pruned shape, once its meta-device twin fits `shapes` exactly."""
    import timm

    from ovit_ray.training.setup import with_structure

    spec = f"{card.timm_model} {json.dumps(card.timm_kwargs)}"
    try:
        with torch.device("meta"):
            skeleton = timm.create_model(card.timm_model, pretrained=False, **card.timm_kwargs)
        skeleton = with_structure(skeleton, card.meta())
    except Exception as err:  # anything timm or a rebuild raises on these values: the card is wrong
        raise ValueError(f"model card: {spec} cannot be built: {' '.join(str(err).split())[:200]}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items() if isinstance(v, torch.Tensor)}
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    differ = [
        f"{k} {shapes[k]} vs {expected[k]}"
        for k in sorted(expected.keys() & shapes.keys())
        if shapes[k] != expected[k]
    ]
    problems = {"missing": missing, "unexpected": unexpected, "shape file vs card": differ}
    if any(problems.values()):
        detail = "; ".join(
            f"{label}: {', '.join(items[:3])}" + (f" (+{len(items) - 3})" if len(items) > 3 else "")
            for label, items in problems.items()
            if items
        )
        raise ValueError(f"{what} does not fit {spec}: {detail}")
    return with_structure(
        timm.create_model(card.timm_model, pretrained=False, **card.timm_kwargs), card.meta()
    )


def load_exported(
    path: str | os.PathLike, card_file: str | os.PathLike | None = None
) -> tuple[nn.Module, ModelCard, dict[str, torch.Tensor]]:
    """(model in eval mode, its validated card, the file's tensors) of an exported `.safetensors` file."""
    from ovit_ray.models import load_checkpoint
    from ovit_ray.training.setup import load_weights

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    card = read_card(card_file or card_path(path))
    model = build_model(card, safetensors_shapes(path), str(path))
    state, _, _ = load_checkpoint(path)
    unknown = [name for name in card.prunable_params if name not in state]
    if unknown:
        raise ValueError(f"model card: prunable_params: {unknown[:3]} are not tensors of {path}")
    load_weights(model, state, str(path), card.timm_model)
    return model.eval(), card, state
