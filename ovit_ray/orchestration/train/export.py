"""Take a pruned model out of an output folder as deployable files, check them, register it, evaluate one.

`export_model` picks a row of the folder's `results.parquet` (a sweep's trial and target, `best` by
`best_trial.RULE`; a train run; a structured or depth model by its run key), rebuilds the model from its
checkpoint (masks multiplied in, a shrunk / token-merging / depth-pruned shape rebuilt) exactly as the card
will describe it, and writes, from `--out best.safetensors`:

- `best.safetensors`: a plain state dict `timm.create_model(name, **kwargs)` loads with `strict=True`
  (after `with_structure` for a pruned shape); always written, it is what the card describes;
- `best.onnx` / `best.pt2` (`--format`): checked on the test split's first batch by their own runtime
  (ONNX Runtime on the CPU, `torch.export.load`) against the PyTorch model, within `MAX_LOGIT_DIFF`; a
  format the model cannot be written in is one line in the card and on the console, the rest is written;
- `best.json` / `best.md`: the model card (`model_card`, `tracking.card_markdown`).

Without `--out` the files go to `<folder>/exported/`; where the same model was exported there before (a
sweep exports the best model of each target when it ends), the formats it lacks are added beside it and its
card lists them: its files are never rewritten.

`register_export` logs the files as an MLflow pyfunc model of the run that made the model and registers
it. `evaluate_exported` measures a `.safetensors`, `.onnx` or `.pt2` file's test and validation top-1.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch
from safetensors.torch import save_file

from ovit_ray.models import PRESETS, load_checkpoint, timm_spec
from ovit_ray.models.formats import FORMATS, load_runtime_model, require_runtime, write_format
from ovit_ray.orchestration.common.atomic import write_atomic, write_json_atomic, write_text_atomic
from ovit_ray.orchestration.kinds import get_kind
from ovit_ray.orchestration.tracking.card import ModelCard, build_model, card_path, markdown_path, read_card
from ovit_ray.orchestration.tracking.card_markdown import card_markdown
from ovit_ray.orchestration.tracking.store import git_commit
from ovit_ray.orchestration.train.folders import SourceFolder, open_source
from ovit_ray.orchestration.train.model_card import CHECKPOINT_COLUMNS, card_facts

__all__ = ["card_path", "checkpoint_location", "evaluate_exported", "export_model"]

MAX_LOGIT_DIFF = 1e-4  # a deployment file whose logits differ more from PyTorch's is not written
CHECK_BATCH = 256  # test images the files are checked on (the first batch of the test split)


def checkpoint_location(source: str | os.PathLike, value: str) -> str:
    """Where a row's checkpoint is: a URI (s3://, gs://) or an absolute path as it is, a relative path
    relative to the output folder (so a copied or moved folder exports from its own files)."""
    if "://" in value or os.path.isabs(value):
        return value
    return str(Path(source) / value)


@contextmanager
def local_copy(location: str) -> Iterator[Path]:
    """A local path for a checkpoint on a local disk or on remote storage (s3://, gs://)."""
    if "://" not in location:
        yield Path(location)
        return
    filesystem, path = pyarrow.fs.FileSystem.from_uri(location)
    with tempfile.TemporaryDirectory(prefix="ovit-export-") as tmp:
        local = Path(tmp) / Path(path).name
        pyarrow.fs.copy_files(path, str(local), source_filesystem=filesystem)
        yield local


def output_files(
    out: Path, formats: Sequence[str], earlier: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """Every file an export to `out` writes: the formats, the card and its Markdown (none may exist); beside
    an `earlier` export of the same model (its card), only the formats it lacks (and the card, ours)."""
    if out.suffix != ".safetensors":
        raise ValueError(f"--out: {out} must end in .safetensors (the other files are named after it)")
    wanted = (
        ("safetensors", *formats) if earlier is None else [f for f in formats if f not in earlier["files"]]
    )
    files = {fmt: out.with_suffix(f".{fmt}") for fmt in wanted}
    ours = () if earlier is not None else (card_path(out), markdown_path(out))
    for path in (*files.values(), *ours):
        if path.exists():
            raise FileExistsError(f"--out: {path} already exists; choose another name")
    return files


def earlier_export(out: Path, folder: SourceFolder, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card of the same model (trial and target of this folder) exported to `out` before, else None."""
    if not (out.is_file() and card_path(out).is_file()):
        return None
    try:
        card = read_card(card_path(out)).model_dump(exclude_unset=True)
    except (OSError, ValueError):  # not a card `export` wrote: the new files must not go beside it
        return None
    source = card.get("source")
    same = (
        isinstance(source, dict)
        and isinstance(card.get("files"), dict)
        and source.get("trial") == folder.label(row)
        and card.get("target") == folder.target(row)
    )
    return card if same else None


def _core_card(
    folder: SourceFolder,
    row: Mapping[str, Any],
    location: str,
    meta: Mapping[str, Any],
    masks: Mapping[str, torch.Tensor],
) -> ModelCard:
    """The card's model-defining and provenance keys (validated as `evaluate` will read them)."""
    model = meta.get("model") or row.get("model") or "digits-vit"
    target = folder.target(row)
    target_name = get_kind(str(row["kind"])).target_name if target is not None else None
    name, kwargs = timm_spec(model, num_classes=meta["num_classes"], image_size=meta["image_size"])
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return ModelCard.model_validate(
        {
            "timm_model": name,
            "timm_kwargs": kwargs,
            # heads and neurons per block of a structured model: `ovit_ray.training.setup.with_structure(
            # model, card)` after `timm.create_model` gives the module these weights fit (None: the timm model)
            "structure": meta.get("structure"),
            # a depth-pruned (BoundaryDPT) model's dropped attentions and merged MLPs: `with_structure` fits them
            "depth_structure": meta.get("depth_structure"),
            "model": model,
            "preset": model if name != model else None,
            "dataset": meta.get("dataset")
            or row.get("dataset")
            or (PRESETS[model].dataset if model in PRESETS else None),
            "data_root": row.get("data_root"),
            "split_seed": meta.get("split_seed") or row.get("split_seed") or 0,
            "method": meta.get("method") or row.get("method"),
            "target": target,
            "target_name": target_name,
            "target_sparsity": target if target_name == "sparsity" else None,
            "achieved_sparsity": row.get("achieved_sparsity"),
            "mask_sparsity": pruned / total if total else 0.0,
            "prunable_params": list(masks),
            "top1": row["top1"],
            "val_top1": row.get("val_top1"),
            "best_epoch": row.get("best_epoch"),
            "source": {
                "folder": str(folder.path.resolve()),
                "kind": row["kind"],
                "trial": folder.label(row),
                "checkpoint": location,
                "sweep": row.get("sweep"),
            },
            "knobs": {k: v for k, v in row.items() if k not in CHECKPOINT_COLUMNS},
            "git_commit": git_commit(),
        }
    )


def _check(fmt: str, path: Path, images: torch.Tensor, expected: torch.Tensor) -> dict[str, Any]:
    """The file's own runtime on `images`: its logits must match PyTorch's within `MAX_LOGIT_DIFF`."""
    with torch.inference_mode():
        got = load_runtime_model(path)(images)
    diff = float((got - expected).abs().max())
    if not diff <= MAX_LOGIT_DIFF:
        raise ValueError(f"its logits differ from PyTorch's by {diff:.2e} (over {MAX_LOGIT_DIFF:g})")
    runtime = "onnxruntime" if fmt == "onnx" else "torch"
    return {"max_abs_diff": diff, "images": len(images), "runtime": f"{runtime} {metadata.version(runtime)}"}


def default_out(folder: SourceFolder, row: Mapping[str, Any]) -> Path:
    """`<folder>/exported/<trial>[-<target>].safetensors`: where `--out` defaults to."""
    target = folder.target(row)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", folder.label(row)) + ("" if target is None else f"-{target:g}")
    return folder.path / "exported" / f"{name}.safetensors"


def export_model(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    trial: str = "best",
    target: float | None = None,
    formats: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the exported files and the card (see the module docstring; `out` defaults to `default_out`);
    returns the card, whose `path` is the .safetensors file. Nothing is ever overwritten, and bad input
    writes nothing."""
    from ovit_ray.data import num_samples
    from ovit_ray.training.setup import job_data, load_weights

    formats = [f for f in dict.fromkeys(formats) if f != "safetensors"]
    for fmt in formats:
        require_runtime(fmt)
    if out is not None:  # checked before the folder is read
        output_files(Path(out), formats)
    folder = open_source(source)
    row = folder.select(trial, target)
    earlier = None
    if out is None:
        out = default_out(folder, row)
        earlier = earlier_export(out, folder, row)
    out = Path(out)
    files = output_files(out, formats, earlier)
    if earlier is not None and not files:  # every format asked for is there already
        return {**earlier, "path": str(out)}
    location = checkpoint_location(folder.path, folder.checkpoint(row))
    with local_copy(location) as local:
        state, masks, meta = load_checkpoint(local)
    for name, mask in masks.items():
        state[name] = state[name] * mask.to(state[name].dtype)
    card = _core_card(folder, row, location, meta, masks)
    model = build_model(card, {k: tuple(v.shape) for k, v in state.items()}, f"checkpoint {location}")
    load_weights(model, state, f"checkpoint {location}", card.timm_model)
    model.eval()
    data = job_data(card.model, dataset=card.dataset, data_root=card.data_root, split_seed=card.split_seed)
    images = torch.stack([data.test[i][0] for i in range(min(CHECK_BATCH, num_samples(data.test)))])
    with torch.inference_mode():
        expected = model(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    if "safetensors" in files:
        plain = {k: v.contiguous() for k, v in state.items()}
        write_atomic(files["safetensors"], lambda tmp: save_file(plain, tmp, metadata={"format": "pt"}))
    checks: dict[str, Any] = dict(earlier.get("checks") or {}) if earlier else {}
    skipped: dict[str, str] = {}
    for fmt in [f for f in formats if f in files]:
        try:
            write_format(fmt, model, images, files[fmt])
            checks[fmt] = _check(fmt, files[fmt], images, expected)
        except Exception as err:  # any exporter or runtime failure: this format is skipped, the rest written
            files[fmt].unlink(missing_ok=True)
            skipped[fmt] = f"cannot be exported to {fmt}: {' '.join(str(err).split())[:300]}"
    pattern = row.get("then_pattern") or row.get("pattern")
    written = {
        **(earlier["files"] if earlier else {}),
        **{f: p.name for f, p in files.items() if f not in skipped},
    }
    full = {
        **card.model_dump(exclude_unset=True),
        "card_version": 2,
        "name": out.stem,
        "path": str(out),
        "files": written,
        "formats_skipped": skipped,
        "checks": checks,
        **card_facts(card, model, masks, data, row, pattern),
    }
    write_json_atomic(card_path(out), full)
    write_text_atomic(markdown_path(out), card_markdown(full))
    return full


def evaluate_exported(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Top-1 on the held-out test split (and on the validation split the model was selected on) of the
    card's dataset, for a `.safetensors` file (rebuilt from its card; sparsity counted in the file) or an
    `.onnx` / `.pt2` file (run by its own runtime; sparsity as its card records)."""
    from ovit_ray.data import num_samples
    from ovit_ray.orchestration.tracking.card import load_exported
    from ovit_ray.training.loop import evaluate, make_loader
    from ovit_ray.training.setup import job_data

    path = Path(path)
    if path.suffix not in {f".{f}" for f in FORMATS}:
        raise ValueError(f"{path}: evaluate takes a .safetensors, .onnx or .pt2 file from `ovit-ray export`")
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix == ".safetensors":
        model, card, state = load_exported(path)
        prunable = [state[name] for name in card.prunable_params]
        total = sum(t.numel() for t in prunable)
        sparsity = sum(int((t == 0).sum()) for t in prunable) / total if total else 0.0
    else:
        card = read_card(card_path(path))
        model = _runtime_model(path)
        sparsity = float(getattr(card, "mask_sparsity", 0.0) or 0.0)
    data = job_data(
        card.model,
        dataset=dataset or card.dataset,
        data_root=data_root or card.data_root,
        split_seed=card.split_seed,
    )
    classes = card.timm_kwargs["num_classes"]
    if data.num_classes != classes:
        raise ValueError(
            f"--dataset: {dataset} has {data.num_classes} classes, the model's head has {classes}"
        )
    with torch.inference_mode():
        top1, val_top1 = (
            evaluate(model, make_loader(split, batch_size, shuffle=False, seed=0), device="cpu")["top1"]
            for split in (data.test, data.val)
        )
    return {
        "top1": top1,
        "val_top1": val_top1,
        "sparsity": sparsity,
        "recorded_top1": card.top1,
        "recorded_val_top1": card.val_top1,
        "images": num_samples(data.test),
    }


def _runtime_model(path: Path) -> torch.nn.Module:
    try:
        return load_runtime_model(path)
    except ValueError:
        raise
    except Exception as err:  # a damaged or foreign file: the runtime's own parse error, on one line
        raise ValueError(f"cannot load {path}: {' '.join(str(err).split())[:300]}") from None
