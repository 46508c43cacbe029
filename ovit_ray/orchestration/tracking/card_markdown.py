"""The model card as Markdown: `FILE.md` beside an exported model, and its Model Registry description.

Written for a person who has the files and nothing else: what the model is, how well it does on which
images, how to load each file, how to turn a PIL image into its input (with a numpy + PIL function they
can paste), the class names, what was pruned, its cost and measured speed, and what made it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Card = Mapping[str, Any]

RUNTIMES = {
    "safetensors": "timm + PyTorch: `load_state_dict(safetensors.torch.load_file(FILE))`, strict",
    "onnx": 'ONNX Runtime: `onnxruntime.InferenceSession(FILE).run(None, {"images": x})[0]`',
    "pt2": "PyTorch: `torch.export.load(FILE).module()(x)`",
}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _split_line(card: Card) -> str:
    test, val = card.get("test") or {}, card.get("validation") or {}
    seed = card.get("split_seed", 0)
    line = (
        f"Test top-1 **{_pct(card.get('top1'))}** on the held-out `test` split of `{card.get('dataset')}` "
        f"({test.get('images', '?')} images, split seed {seed}; never used for training or selection)"
    )
    if card.get("val_top1") is not None:
        line += f"; validation top-1 {_pct(card['val_top1'])} ({val.get('images', '?')} images, which chose this model)"
    return line + "."


def _made_by(card: Card) -> str:
    src = card.get("source") or {}
    parts = [f"sweep `{src['sweep']}`"] if src.get("sweep") else []
    parts.append(f"trial `{src.get('trial')}`")
    if card.get("target") is not None:
        parts.append(f"target {card.get('target_name') or 'budget'} {card['target']:g}")
    commit = card.get("git_commit")
    return (
        f"Made by {', '.join(parts)} of {src.get('what', 'the output folder')} `{src.get('folder')}`"
        + (f" at commit `{commit[:12]}`" if commit else "")
        + ". Every knob of that run is listed under Knobs."
    )


def _files(card: Card) -> list[str]:
    checks = card.get("checks") or {}
    lines = ["| file | load with | checked |", "|---|---|---|"]
    for fmt, name in (card.get("files") or {}).items():
        check = checks.get(fmt)
        note = (
            f"max abs logit difference {check['max_abs_diff']:.1e} vs PyTorch on {check['images']} test images"
            if check
            else "the reference weights (test top-1 recorded by the run)"
        )
        lines.append(f"| `{name}` | {RUNTIMES.get(fmt, fmt)} | {note} |")
    for fmt, why in (card.get("formats_skipped") or {}).items():
        lines.append(f"| ({fmt} not written) | - | {why} |")
    return lines


def preprocess_code(card: Card) -> str:
    """`def preprocess(image) -> np.ndarray`: a PIL image to one (1, C, H, W) float32 input, numpy + PIL only."""
    pre = card["preprocessing"]
    _, height, width = pre["input_size"]
    mean, std = pre["mean"], pre["std"]
    if pre.get("stored_size"):
        stored = pre["stored_size"]
        body = [
            f"    small = image.convert('L').resize(({stored}, {stored}), Image.BOX)",
            "    x = np.asarray(small, dtype=np.float32) / 255  # the stored image, in [0, 1]",
            f"    x = np.asarray(Image.fromarray(x, mode='F').resize(({width}, {height}), Image.BILINEAR))",
            f"    x = (x - {mean[0]!r}) / {std[0]!r}",
            "    return np.repeat(x[None, None], 3, axis=1).astype(np.float32)",
        ]
    else:
        body = [
            "    image = image.convert('RGB')",
            "    w, h = image.size  # the shorter side to the input size, the longer one truncated",
            f"    w, h = ({height}, int({height} * h / w)) if w <= h else (int({height} * w / h), {height})",
            "    image = image.resize((w, h), Image.BILINEAR)",
            f"    left, top = int(round((w - {width}) / 2)), int(round((h - {height}) / 2))",
            f"    image = image.crop((left, top, left + {width}, top + {height}))",
            "    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255",
            f"    x = (x - np.array({list(mean)}, np.float32)[:, None, None]) / np.array({list(std)}, np.float32)[:, None, None]",
            "    return x[None].astype(np.float32)",
        ]
    head = ["import numpy as np", "from PIL import Image", "", "", "def preprocess(image):"]
    return "\n".join(head + body)


def _per_block(values: Sequence[Any] | None, dense: Sequence[Any] | None = None) -> str:
    if values is None:
        return "-"
    if dense is None:
        return " ".join(str(v) for v in values)
    return " ".join(f"{v}/{d}" for v, d in zip(values, dense, strict=False))


def _pruned(card: Card) -> list[str]:
    kept, macs, params = card.get("kept") or {}, card.get("macs") or {}, card.get("params") or {}
    lines = [f"- kind: {', '.join(card.get('kinds') or ['dense'])}; method `{card.get('method')}`"]
    if card.get("achieved_sparsity"):
        lines.append(
            f"- sparsity of the prunable weights: {card['achieved_sparsity']:.4f}"
            + (f" (target {card['target_sparsity']:g})" if card.get("target_sparsity") is not None else "")
        )
    if kept.get("heads") is not None:
        lines.append(f"- heads kept per block: {_per_block(kept['heads'], kept.get('heads_dense'))}")
        lines.append(
            f"- MLP neurons kept per block: {_per_block(kept['neurons'], kept.get('neurons_dense'))}"
        )
    for key, label in (
        ("attention", "attention per block"),
        ("mlp", "MLP per block"),
        ("merge_r", "tokens merged per block (ToMe)"),
    ):
        if kept.get(key) and (key != "merge_r" or any(kept[key])):
            lines.append(f"- {label}: {_per_block(kept[key])}")
    if macs:
        nonzero = f", {macs['nonzero']:,} counting only nonzero weights" if macs.get("nonzero") else ""
        lines.append(
            f"- MACs per image: {macs['per_image']:,} ({macs['ratio']:.3f} of the dense {macs['dense']:,}{nonzero}); {macs.get('counted', '')}"
        )
    if params:
        lines.append(
            f"- parameters: {params['total']:,} ({params['nonzero']:,} nonzero; dense model {params['dense']:,})"
        )
    return lines


def _speed(card: Card) -> list[str]:
    speed = card.get("speed")
    if not speed:
        return [
            "Not measured for this model. `benchmarks/bench_deploy.py` times models as deployed (ONNX Runtime, PyTorch)."
        ]
    return [
        f"Measured by the run on {speed.get('device')} ({speed.get('threads')} threads, torch {speed.get('torch_version')}), "
        f"interleaved with the dense model: batch-1 latency {speed['latency_ms']:.3f} ms (p90 {speed.get('latency_p90_ms') or 0:.3f}; "
        f"dense {speed.get('latency_dense_ms') or 0:.3f}), {speed.get('speedup_latency') or 0:.2f}x; throughput at batch "
        f"{speed.get('batch')}: {speed.get('throughput_ips') or 0:,.0f} images/s (dense {speed.get('throughput_dense_ips') or 0:,.0f}), "
        f"{speed.get('speedup_throughput') or 0:.2f}x."
    ]


def card_markdown(card: Card) -> str:
    """The whole card as Markdown."""
    pre = card.get("preprocessing") or {}
    classes = card.get("classes")
    kwargs = json.dumps(card.get("timm_kwargs"))
    rebuild = (
        "\n# a pruned shape: rebuild it first (ovit-ray installed)\n"
        "from ovit_ray.training.setup import with_structure\n"
        "model = with_structure(model, card)  # card = json.load(open('CARD.json'))"
        if card.get("structure") or card.get("depth_structure")
        else ""
    )
    lines = [
        f"# {card.get('name', 'model')}: `{card.get('model')}` pruned with `{card.get('method')}`",
        "",
        _split_line(card),
        "",
        _made_by(card),
        "",
        "## Files",
        *_files(card),
        "",
        "```python",
        "import timm, safetensors.torch",
        f"model = timm.create_model({card.get('timm_model')!r}, pretrained=False, **{kwargs})" + rebuild,
        "model.load_state_dict(safetensors.torch.load_file('FILE.safetensors'))",
        "```",
        "",
        "## Preprocessing",
        f"Input: float32 `(N, {', '.join(str(v) for v in pre.get('input_size', []))})`; channels: {pre.get('channels')}; "
        f"resize: {pre.get('resize')}, {pre.get('interpolation')}; crop: {pre.get('crop')}; mean {pre.get('mean')}, std {pre.get('std')}.",
        "",
        *[f"{i}. {step}" for i, step in enumerate(pre.get("steps") or [], 1)],
        "",
    ]
    if pre:
        lines += ["```python", preprocess_code(card), "```", ""]
    lines += [
        "## Classes",
        ", ".join(f"{i}: {name}" for i, name in enumerate(classes))
        if classes
        else "Not named by the dataset: class indices only.",
        "",
    ]
    lines += ["## What was pruned", *_pruned(card), "", "## Speed", *_speed(card), ""]
    knobs = {k: v for k, v in (card.get("knobs") or {}).items() if v is not None and not isinstance(v, dict)}
    lines += ["## Knobs", ", ".join(f"`{k}={v}`" for k, v in sorted(knobs.items())) or "-", ""]
    return "\n".join(lines)
