"""Folder-backed datasets (decoded from local files, never downloaded).

- `imagefolder`: `root/<class>/*.jpg` split train/val/test by seed, or `root/train/<class>/...` plus
  `root/test/<class>/...` (the layout the fine-grained sets are converted to; docs/DATASETS.md), where
  test is the given one and val comes out of train.
- `caltech101`: `root/101_ObjectCategories/<class>/image_NNNN.jpg` (or `root` being that folder);
  `BACKGROUND_Google` is not a class. The usual protocol: 30 seeded training images per class (val is
  taken out of them), every other image is test.
- `cifar10`: the python batches in `root/cifar-10-batches-py`; the official test batch is test, val
  comes out of the 50,000 training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset, Subset

from .datasets import DatasetSplits, SplitOptions
from .splits import per_class_split, three_way_split, val_split
from .transforms import pil_eval_transform, pil_preprocessing, pil_train_transform

if TYPE_CHECKING:  # torchvision is imported only by the loaders that read folders
    from torchvision.datasets import ImageFolder

CALTECH_TRAIN_PER_CLASS = 30
CALTECH_EXCLUDED = ("BACKGROUND_Google",)


def _require_root(dataset: str, root: str | None, must_contain: str | None = None) -> Path:
    if root is None:
        raise FileNotFoundError(
            f"dataset {dataset!r} needs root=<path>; none was given (nothing is downloaded)"
        )
    path = Path(root).expanduser()
    expected = path / must_contain if must_contain else path
    if not expected.exists():
        raise FileNotFoundError(f"dataset {dataset!r}: {expected} does not exist (nothing is downloaded)")
    return path


def _views(folder_cls: type[ImageFolder], path: Path, opts: SplitOptions) -> tuple[ImageFolder, ImageFolder]:
    """The same folder twice: with the train transform and with the eval transform."""
    train = folder_cls(
        path, transform=pil_train_transform(opts.augment, opts.image_size, opts.mean, opts.std)
    )
    return train, folder_cls(path, transform=pil_eval_transform(opts.image_size, opts.mean, opts.std))


def _splits(
    train_view: Dataset,
    eval_view: Dataset,
    test: Dataset,
    idx: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    opts: SplitOptions,
) -> DatasetSplits:
    return DatasetSplits(
        train=Subset(train_view, idx[0].tolist()),
        val=Subset(eval_view, idx[1].tolist()),
        test=test,
        num_classes=num_classes,
        image_size=opts.image_size,
        in_chans=3,
        classes=tuple(getattr(train_view, "classes", ())),
        preprocessing=pil_preprocessing(opts.image_size, opts.mean, opts.std),
    )


def imagefolder(root: str | None, opts: SplitOptions) -> DatasetSplits:
    from torchvision.datasets import ImageFolder

    path = _require_root("imagefolder", root)
    if (path / "train").is_dir() and (path / "test").is_dir():
        train_view, eval_view = _views(ImageFolder, path / "train", opts)
        test = ImageFolder(path / "test", transform=pil_eval_transform(opts.image_size, opts.mean, opts.std))
        if test.classes != train_view.classes:
            raise ValueError(f"imagefolder {path}: test classes differ from train classes")
        return _beside_test_set(train_view, eval_view, test, len(train_view.classes), opts)
    train_view, eval_view = _views(ImageFolder, path, opts)
    train, val, test = three_way_split(
        np.asarray(train_view.targets), opts.val_fraction, opts.test_fraction, opts.seed
    )
    return _splits(
        train_view, eval_view, Subset(eval_view, test.tolist()), (train, val), len(train_view.classes), opts
    )


def _caltech_folder() -> type[ImageFolder]:
    from torchvision.datasets import ImageFolder

    class CaltechFolder(ImageFolder):
        """ImageFolder without the background clutter category (not an object class)."""

        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            classes, _ = super().find_classes(directory)
            kept = [c for c in classes if c not in CALTECH_EXCLUDED]
            return kept, {c: i for i, c in enumerate(kept)}

    return CaltechFolder


def caltech101(root: str | None, opts: SplitOptions) -> DatasetSplits:
    path = _require_root("caltech101", root)
    if (path / "101_ObjectCategories").is_dir():
        path = path / "101_ObjectCategories"
    folder = _caltech_folder()
    train_view, eval_view = _views(folder, path, opts)
    labels = np.asarray(train_view.targets)
    pool, test = per_class_split(labels, CALTECH_TRAIN_PER_CLASS, opts.seed)
    return _splits(
        train_view,
        eval_view,
        Subset(eval_view, test.tolist()),
        val_split(pool, labels, opts.val_fraction, opts.seed),
        len(train_view.classes),
        opts,
    )


def cifar10(root: str | None, opts: SplitOptions) -> DatasetSplits:
    from torchvision.datasets import CIFAR10

    path = _require_root("cifar10", root, must_contain="cifar-10-batches-py")
    train_view = CIFAR10(
        path,
        train=True,
        download=False,
        transform=pil_train_transform(opts.augment, opts.image_size, opts.mean, opts.std),
    )
    eval_transform = pil_eval_transform(opts.image_size, opts.mean, opts.std)
    eval_view = CIFAR10(path, train=True, download=False, transform=eval_transform)
    test = CIFAR10(path, train=False, download=False, transform=eval_transform)
    return _beside_test_set(train_view, eval_view, test, 10, opts)


def _beside_test_set(
    train_view: Any, eval_view: Any, test: Any, num_classes: int, opts: SplitOptions
) -> DatasetSplits:
    """Splits for data that ships its own test set: val is a stratified share of the train set."""
    labels = np.asarray(train_view.targets)
    return _splits(
        train_view,
        eval_view,
        test,
        val_split(np.arange(len(labels)), labels, opts.val_fraction, opts.seed),
        num_classes,
        opts,
    )
