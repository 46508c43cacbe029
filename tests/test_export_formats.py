"""`ovit-ray export --format onnx pt2` for every kind of kept model (unstructured, 2:4, OPTIN-shrunk,
token-merging, depth-pruned), each file checked by its own runtime (ONNX Runtime on the CPU,
`torch.export.load`) against PyTorch and re-evaluated to the recorded test top-1; the card a person can
follow (its preprocessing function reproduces the dataset's inputs); wrong folders and doctored cards are
one error line (exit 2) before anything big is built."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import timm
import torch
from kept_folders import KINDS, build_kept_folder
from PIL import Image
from safetensors.torch import load_file, save_file

from ovit_ray.cli.main import main
from ovit_ray.data import load_dataset
from ovit_ray.models import formats, load_checkpoint, timm_spec
from ovit_ray.orchestration.results.schemas import KIND_KEY
from ovit_ray.orchestration.tracking.card_markdown import preprocess_code
from ovit_ray.orchestration.train.export import card_path, checkpoint_location, evaluate_exported


@pytest.fixture(scope="module")
def kept(digits_preset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("kept-kinds")
    return out, build_kept_folder(out, digits_preset)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_exports_to_every_format_and_reproduces_its_top1(
    kept: tuple[Path, dict], kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, rows = kept
    out = tmp_path / "best.safetensors"
    assert main(["export", str(folder), "--trial", kind, "--out", str(out), "--format", "onnx", "pt2"]) == 0
    printed = capsys.readouterr().out
    card = json.loads(card_path(out).read_text())
    assert card["files"] == {"safetensors": "best.safetensors", "onnx": "best.onnx", "pt2": "best.pt2"}
    assert card["formats_skipped"] == {} and "not written" not in printed
    for fmt in ("onnx", "pt2"):  # the first test batch through the file's own runtime
        assert card["checks"][fmt]["max_abs_diff"] <= 1e-4 and card["checks"][fmt]["images"] == 256
    recorded = rows[kind]["top1"]
    assert card["top1"] == recorded and card["test"] == {**card["test"], "split": "test", "images": 359}
    for suffix in (".safetensors", ".onnx", ".pt2"):  # the whole test split, through each runtime
        result = evaluate_exported(out.with_suffix(suffix))
        assert result["top1"] == recorded and result["val_top1"] == rows[kind]["val_top1"], suffix
    expected = {
        "unstructured": ["unstructured (masks folded in)"],
        "nm": ["N:M (2:4, masks folded in)"],
        "optin": ["shrunk (optin: heads and MLP neurons removed)"],
        "tome": ["shrunk (tome: heads and MLP neurons removed)", "token-merged (ToMe)"],
        "depth": ["depth-pruned (attention dropped / MLPs merged)"],
    }[kind]
    assert card["kinds"] == expected
    if kind in ("unstructured", "nm"):  # a plain timm model, zeros where pruned
        model = timm.create_model(card["timm_model"], pretrained=False, **card["timm_kwargs"])
        model.load_state_dict(load_file(out), strict=True)
        assert card["macs"]["nonzero"] < card["macs"]["per_image"] == card["macs"]["dense"]
        assert card["mask_sparsity"] == pytest.approx(0.5, abs=0.01)
    else:
        assert (
            card["macs"]["per_image"] < card["macs"]["dense"]
            and card["params"]["total"] < card["params"]["dense"]
        )
    if kind == "depth":
        assert card["kept"]["attention"][3] == "bias" and card["kept"]["mlp"][1] == "merged"
    if kind in ("optin", "tome"):
        assert card["kept"]["heads"] == [2, 1, 0, 2] and card["kept"]["neurons"] == [200, 128, 64, 0]
    markdown = out.with_suffix(".md").read_text()
    assert (
        f"{100 * recorded:.2f}%" in markdown
        and "359 images" in markdown
        and "def preprocess(image)" in markdown
    )


@pytest.mark.slow
def test_a_copied_folder_exports_from_its_own_files(kept: tuple[Path, dict], tmp_path: Path) -> None:
    """Rows name kept models relative to the folder: a copy works with the original gone."""
    folder, rows = kept
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    moved = folder.with_name(folder.name + "-away")
    folder.rename(moved)
    try:
        out = tmp_path / "x.safetensors"
        assert main(["export", str(copy), "--trial", "unstructured", "--out", str(out)]) == 0
        card = json.loads(card_path(out).read_text())
        assert Path(card["source"]["checkpoint"]).is_relative_to(copy)
        assert evaluate_exported(out)["top1"] == rows["unstructured"]["top1"]
        assert main(["export", str(copy), "--trial", "optin"]) == 0  # --out defaults into the folder
        assert (copy / "exported" / "optin-0.6.safetensors").is_file() and (
            copy / "exported" / "optin-0.6.md"
        ).is_file()
    finally:
        moved.rename(folder)


@pytest.mark.slow
def test_a_default_export_adds_the_formats_an_earlier_one_lacks(
    kept: tuple[Path, dict], tmp_path: Path
) -> None:
    """A sweep exports each target's best model into `exported/` when it ends; `ovit-ray export DIR --format
    onnx` then adds the ONNX file beside it (the issue's own command) and never rewrites what is there."""
    folder, rows = kept
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert main(["export", str(copy), "--trial", "optin"]) == 0
    weights = copy / "exported" / "optin-0.6.safetensors"
    before = weights.read_bytes()
    assert main(["export", str(copy), "--trial", "optin", "--format", "onnx"]) == 0
    card = json.loads(card_path(weights).read_text())
    assert (
        card["files"] == {"safetensors": weights.name, "onnx": "optin-0.6.onnx"} and "onnx" in card["checks"]
    )
    assert (
        weights.read_bytes() == before
        and evaluate_exported(weights.with_suffix(".onnx"))["top1"] == card["top1"]
    )
    stamp = weights.with_suffix(".onnx").stat().st_mtime_ns
    assert main(["export", str(copy), "--trial", "optin", "--format", "onnx"]) == 0  # nothing left to add
    assert weights.with_suffix(".onnx").stat().st_mtime_ns == stamp
    assert main(["export", str(copy), "--trial", "optin", "--out", str(weights)]) == 2  # named: never over


def test_checkpoint_location_takes_relative_paths_absolute_paths_and_uris(tmp_path: Path) -> None:
    assert checkpoint_location(tmp_path, "kept/a.safetensors") == str(tmp_path / "kept/a.safetensors")
    assert checkpoint_location(tmp_path, "/elsewhere/a.safetensors") == "/elsewhere/a.safetensors"
    assert (
        checkpoint_location(tmp_path, "s3://bucket/run/best/a.safetensors")
        == "s3://bucket/run/best/a.safetensors"
    )


@pytest.mark.slow
def test_a_format_that_fails_is_one_line_and_the_rest_is_written(
    kept: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_onnx(model: torch.nn.Module, example: torch.Tensor, path: object) -> None:
        raise RuntimeError("No ONNX function found for <OpOverload(op='aten.sort', overload='stable')>")

    monkeypatch.setitem(formats.WRITERS, "onnx", no_onnx)
    out = tmp_path / "m.safetensors"
    assert (
        main(["export", str(kept[0]), "--trial", "tome", "--out", str(out), "--format", "onnx", "pt2"]) == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if "not written" in line]
    assert len(lines) == 1 and "onnx" in lines[0] and "aten.sort" in lines[0]
    assert out.exists() and out.with_suffix(".pt2").exists() and not out.with_suffix(".onnx").exists()
    assert "onnx" in json.loads(card_path(out).read_text())["formats_skipped"]


def test_a_missing_runtime_names_the_extra_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked first, before the folder is even read."""
    monkeypatch.setitem(formats.RUNTIME_MODULES, "onnx", ("onnx", "onnxruntime_not_installed_here"))
    out = tmp_path / "m.safetensors"
    assert main(["export", str(tmp_path), "--trial", "optin", "--out", str(out), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ovit-ray[deploy]" in err[0] and "onnxruntime_not_installed_here" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_the_cards_preprocessing_function_reproduces_the_inputs(tmp_path: Path) -> None:
    """What the Markdown card tells a person to run on a PIL image gives the tensor the model was tested on."""
    digits = load_dataset("digits", image_size=16)
    namespace: dict = {}
    exec(preprocess_code({"preprocessing": digits.preprocessing.__dict__}), namespace)
    from sklearn.datasets import load_digits

    raw = load_digits().images / 16.0  # the stored 8x8 images; as a person's 64x64 scan of one:
    x, _ = digits.test[0]
    index = next(i for i in range(len(raw)) if torch.allclose(_inputs(raw[i], digits), x, atol=1e-5))
    scan = Image.fromarray(np.kron(np.round(raw[index] * 255), np.ones((8, 8))).astype(np.uint8))
    assert np.abs(namespace["preprocess"](scan)[0] - x.numpy()).max() < 0.01  # 8-bit pixels only
    # a folder dataset: the torchvision eval transform, exactly
    rng = np.random.default_rng(0)
    for name, size in (("a", (50, 37)), ("b", (33, 61))):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                tmp_path / name / f"{i}.png"
            )
    folder = load_dataset(
        "imagefolder", root=str(tmp_path), image_size=24, val_fraction=0.34, test_fraction=0.34
    )
    assert folder.classes == ("a", "b")
    exec(preprocess_code({"preprocessing": folder.preprocessing.__dict__}), namespace)
    image, _ = folder.test[0]
    path = folder.test.dataset.samples[folder.test.indices[0]][0]
    assert np.abs(namespace["preprocess"](Image.open(path))[0] - image.numpy()).max() < 1e-6


def _inputs(stored: np.ndarray, digits) -> torch.Tensor:
    """The dataset's recipe on one stored image (what `_tensor_splits` does), for finding it in the split."""
    pre = digits.preprocessing
    x = torch.nn.functional.interpolate(
        torch.from_numpy(stored.astype(np.float32))[None, None],
        size=(16, 16),
        mode="bilinear",
        align_corners=False,
    )
    return ((x[0] - pre.mean[0]) / pre.std[0]).expand(3, -1, -1)


@pytest.fixture
def exported_preset(digits_preset, tmp_path: Path) -> Path:
    """The trained preset as an exported file and card (no folder needed)."""
    state, _, _ = load_checkpoint(digits_preset)
    path = tmp_path / "preset.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    name, kwargs = timm_spec("digits-vit", num_classes=10, image_size=16)
    card = {
        "timm_model": name,
        "timm_kwargs": kwargs,
        "model": "digits-vit",
        "dataset": "digits",
        "top1": 0.5,
        "prunable_params": ["blocks.0.attn.qkv.weight"],
    }
    card_path(path).write_text(json.dumps(card))
    return path


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"timm_kwargs": {"pretrained": True}}, "pretrained"),
        ({"timm_model": None}, "timm_model"),
        ({"timm_model": "vit_made_up_patch16"}, "timm_model"),
        ({"prunable_params": ["blocks.9.attn.qkv.weight"]}, "prunable_params"),
        ({"timm_kwargs": {"embed_dim": 10_000_000}}, "embed_dim"),
        ({"timm_kwargs": {"depth": 100_000}}, "depth"),
        ({"timm_kwargs": {"embed_dim": 1e7}}, "cannot be built"),
        ({"timm_kwargs": {"embed_dim": 65536, "num_heads": 1}}, "does not fit"),
        ({"structure": {"heads": [1, 1], "neurons": [3]}}, "structure"),
        ("a list", "JSON object"),
        ("not json", "not JSON"),
    ],
)
def test_a_doctored_card_is_one_line_before_anything_big_is_built(
    exported_preset: Path, change, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    card_file = card_path(exported_preset)
    card = json.loads(card_file.read_text())
    if change == "a list":
        card_file.write_text(json.dumps([card]))
    elif change == "not json":
        card_file.write_text("{'timm_model': ")
    else:
        for key, value in change.items():
            card[key] = {**card[key], **value} if isinstance(value, dict) and key == "timm_kwargs" else value
        card_file.write_text(json.dumps({k: v for k, v in card.items() if v is not None}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["evaluate", str(exported_preset)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB: nothing big was built


def test_the_untouched_card_evaluates(exported_preset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The doctored cards above fail for their change alone; a damaged deployment file is one line too."""
    assert main(["evaluate", str(exported_preset)]) == 0
    assert "test top-1 0.97" in capsys.readouterr().out
    for suffix in (".onnx", ".pt2"):
        damaged = exported_preset.with_suffix(suffix)
        damaged.write_bytes(b"not a model file")
        assert main(["evaluate", str(damaged)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"cannot load {damaged}" in err[0], err


def _results(folder: Path, kind: bytes, rows: list[dict]) -> Path:
    folder.mkdir()
    table = pa.Table.from_pylist(rows)
    pq.write_table(table.replace_schema_metadata({KIND_KEY: kind}), folder / "results.parquet")
    return folder


KEPT_ROW = {"trial_id": "t1", "kind": "structured", "target": 0.5, "top1": 0.9, "kept_model": "m.safetensors"}


@pytest.mark.parametrize(
    ("kind", "rows", "argv", "says"),
    [
        (b"trials", [{"trial_id": "t1", "status": "finished"}], [], "holds trials rows"),
        (b"", [{"method": "ovit", "top1": 0.9}], [], "without ovit-ray's schema"),
        (
            b"results",
            [{"trial_id": "t1", "kind": "transfer", "target": 0.0, "top1": 0.9, "kept_model": None}],
            [],
            "no kept model in any of its 1 row(s)",
        ),
        (b"results", [KEPT_ROW], ["--trial", "t2"], "'t2' has no kept model"),
        (b"results", [KEPT_ROW], ["--trial", "t1", "--target", "0.7"], "0.7 is not a target of t1"),
        (None, [], [], "not an ovit-ray output folder"),
    ],
)
def test_export_from_a_folder_it_cannot_take_is_one_line(
    tmp_path: Path, kind: bytes | None, rows: list, argv: list, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _results(tmp_path / "f", kind, rows) if kind is not None else tmp_path
    out = tmp_path / "out" / "m.safetensors"
    assert main(["export", str(folder), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert not out.parent.exists()
