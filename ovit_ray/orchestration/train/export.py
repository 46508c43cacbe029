"""Take a pruned model out of a sweep or run folder, and check an exported one.

`export_model` picks a row of `results.parquet` (a trial and target; `best` by `best_trial.RULE`),
reads its best checkpoint from the run's persistent storage, multiplies the masks in and writes a
plain state dict (no `model.`/`mask.` prefixes) that `timm.create_model(name, **kwargs)` loads with
`strict=True`, plus a JSON model card beside it naming that call, the knobs, the target and achieved
sparsity, the recorded top-1, the source run and trial and the git commit. `evaluate_exported`
rebuilds the model from the card and measures test and validation top-1 and sparsity on the same splits.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch
from safetensors.torch import save_file

from ovit_ray.models import load_checkpoint, timm_spec
from ovit_ray.orchestration.common.atomic import write_atomic, write_json_atomic
from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.best import best_finished
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tracking.store import git_commit


def card_path(path: str | os.PathLike) -> Path:
    """The model card beside an exported file: `model.safetensors` -> `model.json`."""
    return Path(path).with_suffix(".json")


def _run_id(row: Mapping[str, Any]) -> str:
    return str(row.get("trial_id") or row.get("run_name") or row.get("run_key"))


def select_row(source: Path, trial: str = "best", target: float | None = None) -> dict[str, Any]:
    """The result row to export: `trial` is a trial id (or run name / key), or `best`; `target`
    defaults to the highest target of that trial."""
    rows = read_rows(source / RESULTS_FILE)
    if not rows:
        raise ValueError(f"{source / RESULTS_FILE}: no finished rows to export")
    if trial == "best":
        found = best_finished(source)
        trial = str(found[1]["trial_id"]) if found else "best"
    own = [r for r in rows if trial in (_run_id(r), str(r.get("run_key")))]
    if not own:
        known = sorted({_run_id(r) for r in rows})
        raise ValueError(f"--trial: {trial!r} is not in {source / RESULTS_FILE} (known: {', '.join(known)})")
    if target is None:
        return max(own, key=lambda r: r.get("target_sparsity") or 0.0)  # structured rows have none
    row = next((r for r in own if abs(r["target_sparsity"] - target) < 1e-9), None)
    if row is None:
        targets = ", ".join(f"{r['target_sparsity']:g}" for r in own)
        raise ValueError(f"--target: {target:g} is not a target of {trial} (targets: {targets})")
    return row


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


def export_model(
    source: str | os.PathLike, out: str | os.PathLike, *, trial: str = "best", target: float | None = None
) -> dict[str, Any]:
    """Write the exported `.safetensors` and its card; returns the card. Never overwrites a file."""
    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out: {out} must end in .safetensors")
    for path in (out, card_path(out)):
        if path.exists():
            raise FileExistsError(f"--out: {path} already exists; choose another name")
    if not source.is_dir():
        raise FileNotFoundError(f"run or sweep folder not found: {source}")
    row = select_row(source, trial, target)
    location = row.get("best_checkpoint") or row.get("checkpoint")
    if not location:
        raise ValueError(f"trial {_run_id(row)} target {row.get('target_sparsity')} has no best checkpoint")
    with local_copy(location) as local:
        state, masks, meta = load_checkpoint(local)
    for name, mask in masks.items():
        state[name] = state[name] * mask.to(state[name].dtype)
    model = meta.get("model") or row.get("model") or "digits-vit"
    name, kwargs = timm_spec(model, num_classes=meta["num_classes"], image_size=meta["image_size"])
    pruned = sum(int((~m.bool()).sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    card = {
        "timm_model": name,
        "timm_kwargs": kwargs,
        # heads and neurons per block of a structured model: `ovit_ray.pruning.structured.rebuild(model,
        # structure)` after `timm.create_model` gives the module these weights fit (None: the timm model)
        "structure": meta.get("structure"),
        # a depth-pruned (BoundaryDPT) model's dropped attentions and merged MLPs: `rebuild_depth` fits them
        "depth_structure": meta.get("depth_structure"),
        "model": model,
        "preset": model if name != model else None,
        "dataset": meta.get("dataset") or row.get("dataset"),
        "split_seed": meta.get("split_seed", 0),
        "method": meta.get("method") or row.get("method"),
        "target_sparsity": row.get("target_sparsity"),
        "achieved_sparsity": row.get("achieved_sparsity"),
        "mask_sparsity": pruned / total if total else 0.0,
        "prunable_params": list(masks),
        "top1": row["top1"],
        "val_top1": row.get("val_top1"),
        "best_epoch": row.get("best_epoch"),
        "source": {
            "folder": str(source.resolve()),
            "trial": _run_id(row),
            "checkpoint": location,
            "sweep": row.get("sweep"),
            "run_key": row.get("run_key"),
        },
        "knobs": {k: v for k, v in row.items() if k not in ("best_checkpoint", "checkpoint")},
        "git_commit": git_commit(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    plain = {k: v.contiguous() for k, v in state.items()}
    write_atomic(out, lambda tmp: save_file(plain, tmp, metadata={"format": "pt"}))
    write_json_atomic(card_path(out), card)
    return card


def evaluate_exported(
    path: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_root: str | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Top-1 on the held-out test split (and on the validation split the model was selected on) of the
    card's dataset, and the sparsity of its prunable weights (the card's list; zeros counted in the file)."""
    import timm

    from ovit_ray.data import num_samples
    from ovit_ray.training.loop import evaluate, make_loader
    from ovit_ray.training.setup import job_data, load_weights, with_structure

    path = Path(path)
    card_file = card_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if not card_file.is_file():
        raise FileNotFoundError(
            f"model card not found: {card_file} (written by `ovit-ray export` beside the model)"
        )
    card = json.loads(card_file.read_text())
    state, _, _ = load_checkpoint(path)
    model = with_structure(
        timm.create_model(card["timm_model"], pretrained=False, **card["timm_kwargs"]), card
    )
    load_weights(model, state, str(path), f"{card['timm_model']} {card['timm_kwargs']}")
    data = job_data(
        card["model"],
        dataset=dataset or card["dataset"],
        data_root=data_root,
        split_seed=card.get("split_seed", 0),
    )
    if data.num_classes != card["timm_kwargs"]["num_classes"]:
        raise ValueError(
            f"--dataset: {dataset} has {data.num_classes} classes, the model's head has "
            f"{card['timm_kwargs']['num_classes']}"
        )
    with torch.no_grad():
        top1, val_top1 = (
            evaluate(model, make_loader(split, batch_size, shuffle=False, seed=0), device="cpu")["top1"]
            for split in (data.test, data.val)
        )
    prunable = [state[name] for name in card["prunable_params"]]
    zeros = sum(int((t == 0).sum()) for t in prunable)
    total = sum(t.numel() for t in prunable)
    return {
        "top1": top1,
        "val_top1": val_top1,
        "sparsity": zeros / total if total else 0.0,
        "recorded_top1": card["top1"],
        "recorded_val_top1": card.get("val_top1"),
        "images": num_samples(data.test),
    }
