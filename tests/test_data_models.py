import numpy as np
import pytest
import torch
from PIL import Image

from ovit_ray.data import load_dataset
from ovit_ray.models import (
    PRESETS,
    UnknownModelError,
    cache_dir,
    create_model,
    load_checkpoint,
    save_checkpoint,
)

PRUNABLE_SUFFIXES = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")


def _labels(dataset) -> np.ndarray:
    return np.array([dataset[i][1] for i in range(len(dataset))])


# --- data -------------------------------------------------------------------------------------


def test_digits_split_sizes_shapes_and_stratification():
    data = load_dataset("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1079, 359, 359)
    assert (data.num_classes, data.image_size, data.in_chans) == (10, 16, 3)
    x, y = data.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey replicated to 3 channels
    for split in (data.val, data.test):
        counts = np.bincount(_labels(split), minlength=10)
        assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    # normalised with train statistics
    train_x = data.train.images
    assert abs(train_x.mean().item()) < 1e-4 and abs(train_x.std().item() - 1) < 1e-3


def test_digits_split_is_deterministic_per_seed():
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.labels, c.test.labels)  # test does not move with the split seed


def _rows(dataset) -> set[bytes]:
    return {dataset.images[i].numpy().tobytes() for i in range(len(dataset))}


@pytest.mark.parametrize("name", ["digits", "digits-0-4", "lfw"])
@pytest.mark.parametrize("seed", [0, 3])
def test_test_split_is_disjoint_from_train_and_val(name, seed):
    data = load_dataset(name, seed=seed)
    train, val, test = _rows(data.train), _rows(data.val), _rows(data.test)
    assert len(test) > 0 and not test & train and not test & val and not train & val


def test_digit_halves_are_relabelled_class_subsets():
    low, high = load_dataset("digits-0-4"), load_dataset("digits-5-9")
    assert low.num_classes == high.num_classes == 5
    assert set(_labels(high.test).tolist()) == set(range(5))
    assert 850 < len(low.train) + len(low.val) + len(low.test) < 950  # ~180 images per digit


def test_digits_custom_image_size_and_val_fraction():
    data = load_dataset("digits", image_size=32, val_fraction=0.5)
    assert data.train[0][0].shape == (3, 32, 32)
    assert abs(len(data.val) - 1797 / 2) <= 1 and abs(len(data.test) - 1797 / 5) <= 1


def test_light_augmentation_shifts_train_only():
    plain, aug = load_dataset("digits"), load_dataset("digits", augment="light")
    torch.manual_seed(0)
    changed = sum(not torch.equal(aug.train[i][0], plain.train[i][0]) for i in range(50))
    assert changed > 25  # 8 of 9 shifts move the image
    assert all(torch.equal(aug.val[i][0], plain.val[i][0]) for i in range(50))


def test_lfw_faces_vs_non_faces():
    data = load_dataset("lfw")
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (120, 40, 40, 2)
    assert data.val[0][0].shape == (3, 32, 32)
    assert np.bincount(_labels(data.val)).tolist() == np.bincount(_labels(data.test)).tolist() == [20, 20]


def _write_images(folder, classes, per_class, *, mode="RGB", ext="png", seed=0):
    rng = np.random.default_rng(seed)
    for cls in classes:
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / cls / f"image_{i + 1:04d}.{ext}")


def _paths(subset) -> set[str]:
    return {subset.dataset.samples[i][0] for i in subset.indices}


def test_imagefolder_reads_real_files(tmp_path):
    _write_images(tmp_path, ("cat", "dog"), 10)
    data = load_dataset("imagefolder", root=str(tmp_path), image_size=24, augment="deit")
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (12, 4, 4, 2)
    assert sorted(_labels(data.val).tolist()) == sorted(_labels(data.test).tolist()) == [0, 0, 1, 1]
    assert data.train[0][0].shape == data.val[0][0].shape == data.test[0][0].shape == (3, 24, 24)
    assert not _paths(data.test) & (_paths(data.train) | _paths(data.val))


def test_imagefolder_train_test_layout_keeps_the_given_test_split(tmp_path):
    """The layout the fine-grained sets (Pets, Flowers-102, CUB-200) are converted to."""
    _write_images(tmp_path / "train", ("abyssinian", "beagle", "boxer"), 6)
    _write_images(tmp_path / "test", ("abyssinian", "beagle", "boxer"), 2, ext="jpg", seed=1)
    data = load_dataset("imagefolder", root=str(tmp_path), image_size=16)
    assert (len(data.train) + len(data.val), len(data.test), data.num_classes) == (18, 6, 3)
    assert {p.split("/")[-3] for p in (s[0] for s in data.test.samples)} == {"test"}
    assert not _paths(data.val) & _paths(data.train) and len(data.val) == 4
    assert data.test[5][1] == 2 and data.test[0][0].shape == (3, 16, 16)


def test_caltech101_layout_drops_background_and_takes_30_per_class(tmp_path):
    top = tmp_path / "101_ObjectCategories"
    _write_images(top, ("BACKGROUND_Google",), 3)
    _write_images(top, ("accordion",), 34, mode="L", ext="jpg")  # some Caltech images are greyscale
    _write_images(top, ("airplanes",), 40, ext="jpg", seed=2)
    data = load_dataset("caltech101", root=str(tmp_path), image_size=20)
    assert data.num_classes == 2 and data.train.dataset.classes == ["accordion", "airplanes"]
    assert len(data.train) + len(data.val) == 60 and len(data.val) == 12
    assert np.bincount(_labels(data.test)).tolist() == [4, 10]  # every image not drawn for training
    assert data.test[0][0].shape == (3, 20, 20)
    assert not _paths(data.test) & (_paths(data.train) | _paths(data.val))
    assert _paths(load_dataset("caltech101", root=str(top), image_size=20).test) == _paths(data.test)


def test_unknown_dataset_and_recipe_raise():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown augmentation recipe 'heavy'"):
        load_dataset("digits", augment="heavy")


@pytest.mark.parametrize("name", ["imagefolder", "caltech101", "cifar10"])
def test_missing_root_raises_file_not_found(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=name):
        load_dataset(name)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"{name}.*nowhere"):
        load_dataset(name, root=str(missing))


def test_cifar10_root_without_batches_names_expected_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=str(tmp_path))


# --- models -----------------------------------------------------------------------------------


def test_preset_has_standard_timm_names_and_block_divisible_weights():
    model = create_model("digits-vit")
    spec = PRESETS["digits-vit"]
    prunable = {n: p for n, p in model.named_parameters() if n.endswith(PRUNABLE_SUFFIXES)}
    assert len(prunable) == 4 * spec.arch["depth"]
    assert "blocks.0.attn.qkv.weight" in prunable and "blocks.0.mlp.fc2.weight" in prunable
    assert all(p.numel() % 64 == 0 for p in prunable.values())
    out = model(torch.randn(2, 3, spec.image_size, spec.image_size))
    assert out.shape == (2, 10)
    assert create_model("digits-vit", num_classes=3)(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_timm_model_by_name_is_untrained_and_configurable():
    model = create_model("vit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8, depth=2)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert len(model.blocks) == 2


def test_unknown_model_raises_with_name():
    with pytest.raises(UnknownModelError, match="vit_tinyy_patch16_224.*vit_tiny_patch16_224") as info:
        create_model("vit_tinyy_patch16_224")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    model = create_model("digits-vit")
    masks = {"blocks.0.attn.qkv.weight": torch.rand_like(model.blocks[0].attn.qkv.weight) > 0.5}
    path = save_checkpoint(
        tmp_path / f"sub/ck{suffix}", model, masks=masks, meta={"sparsity": 0.5, "tag": "x"}
    )
    assert [p.name for p in path.parent.iterdir()] == [f"ck{suffix}"]  # no temp files left behind

    state, loaded_masks, meta = load_checkpoint(path)
    assert meta == {"sparsity": 0.5, "tag": "x"}
    assert loaded_masks.keys() == masks.keys()
    assert torch.equal(loaded_masks["blocks.0.attn.qkv.weight"], masks["blocks.0.attn.qkv.weight"])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())

    restored = create_model("digits-vit", checkpoint=str(path)).eval()
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(restored(x), model.eval()(x))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_and_missing_checkpoints(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(ValueError, match=f"bad{suffix}"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match=f"absent{suffix}"):
        load_checkpoint(tmp_path / f"absent{suffix}")


def test_checkpoint_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported suffix"):
        save_checkpoint(tmp_path / "ck.bin", create_model("digits-vit"))


def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OVIT_RAY_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache" and cache_dir().is_dir()
