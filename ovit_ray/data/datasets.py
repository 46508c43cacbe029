"""Datasets with fixed, seeded train / val / test splits.

Every dataset yields `(float32 CxHxW normalised tensor, int label)`. The bundled ones (digits and its
two class halves, lfw) ship with scikit-learn / scikit-image, so nothing is ever downloaded; the
folder-backed ones (imagefolder, caltech101, cifar10, in `folders.py`) read only what the user
already has under `root`. Val picks checkpoints; test is only ever reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .splits import three_way_split
from .transforms import Preprocessing, Transform, tensor_preprocessing, tensor_train_transform

# Default input resolution per dataset (digits: 8x8 upsampled 2x; lfw: 25x25 upsampled to 32).
DEFAULT_IMAGE_SIZE = {
    "digits": 16,
    "digits-0-4": 16,
    "digits-5-9": 16,
    "lfw": 32,
    "imagefolder": 224,
    "caltech101": 224,
    "cifar10": 32,
}


def num_samples(dataset: Dataset[Any]) -> int:
    """Length of a map-style dataset: torch's `Dataset` leaves `__len__` to subclasses (its stubs have
    none), and every split built here (TensorImageDataset, Subset, torchvision folders) defines it."""
    return len(cast(Sized, dataset))


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's fixed train/val/test splits plus what a model needs to know about its inputs."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    image_size: int
    in_chans: int
    classes: tuple[str, ...] = ()  # the name of each label, where the dataset has names
    preprocessing: Preprocessing | None = None  # how an image becomes an evaluation input


@dataclass(frozen=True)
class SplitOptions:
    """How a loader splits and transforms: fractions are of the whole set where there is no official split."""

    image_size: int
    seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    augment: str = "none"
    mean: tuple[float, ...] | None = None  # PIL datasets: normalisation (default ImageNet's)
    std: tuple[float, ...] | None = None


class TensorImageDataset(Dataset):
    """Normalised NxCxHxW images held in memory, with an optional per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def _tensor_splits(
    images: np.ndarray, labels: np.ndarray, opts: SplitOptions, classes: tuple[str, ...], source: str
) -> DatasetSplits:
    """Upsample grey NxHxW images in [0, 1] to 3 channels at `image_size`, normalise with train-split
    statistics; `source` says how a PIL image becomes one of `images` (the model card's first step)."""
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    x = F.interpolate(x, size=(opts.image_size, opts.image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels.astype(np.int64))
    train, val, test = (
        torch.from_numpy(i) for i in three_way_split(labels, opts.val_fraction, opts.test_fraction, opts.seed)
    )
    mean, std = x[train].mean(), x[train].std()
    x = ((x - mean) / std).expand(-1, 3, -1, -1).contiguous()
    return DatasetSplits(
        train=TensorImageDataset(x[train], y[train], tensor_train_transform(opts.augment)),
        val=TensorImageDataset(x[val], y[val]),
        test=TensorImageDataset(x[test], y[test]),
        num_classes=int(labels.max()) + 1,
        image_size=opts.image_size,
        in_chans=3,
        classes=classes,
        preprocessing=tensor_preprocessing(
            source, images.shape[-1], opts.image_size, float(mean), float(std)
        ),
    )


# How a PIL image becomes a stored image of the bundled datasets.
DIGITS_SOURCE = (
    "image.convert('L'), ink bright on a dark background (invert a scan of dark ink), resize to 8x8 with "
    "Image.BOX, scale to [0, 1] (pixel / 255): sklearn's digits are 8x8 counts of inked pixels (0..16) / 16"
)
LFW_SOURCE = (
    "image.convert('L') of a face crop as in skimage.data.lfw_subset, resize to 25x25, scale to [0, 1] "
    "(pixel / 255)"
)


def _digit_classes(first: int, last: int) -> Callable[[str | None, SplitOptions], DatasetSplits]:
    """Digits restricted to classes first..last, relabelled from 0 (the same-domain transfer pair)."""

    def load(root: str | None, opts: SplitOptions) -> DatasetSplits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        keep = (digits.target >= first) & (digits.target <= last)
        names = tuple(str(k) for k in range(first, last + 1))
        return _tensor_splits(
            digits.images[keep] / 16.0, digits.target[keep] - first, opts, names, DIGITS_SOURCE
        )

    return load


def _lfw(root: str | None, opts: SplitOptions) -> DatasetSplits:
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces followed by 100 non-faces
    labels = np.repeat(np.array([1, 0]), len(images) // 2)
    return _tensor_splits(images, labels, opts, ("not a face", "face"), LFW_SOURCE)


def _loaders() -> dict[str, Callable[[str | None, SplitOptions], DatasetSplits]]:
    from .folders import caltech101, cifar10, imagefolder

    return {
        "digits": _digit_classes(0, 9),
        "digits-0-4": _digit_classes(0, 4),
        "digits-5-9": _digit_classes(5, 9),
        "lfw": _lfw,
        "imagefolder": imagefolder,
        "caltech101": caltech101,
        "cifar10": cifar10,
    }


DATASET_NAMES = tuple(DEFAULT_IMAGE_SIZE)


def load_dataset(
    name: str = "digits",
    *,
    root: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    augment: str = "none",
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> DatasetSplits:
    """Load `name` with deterministic train/val/test splits; `augment` (none|light|deit) affects train only.

    The test split is the same for every `seed` (official where the dataset has one); `seed` moves val.
    """
    if name not in DEFAULT_IMAGE_SIZE:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    size = DEFAULT_IMAGE_SIZE[name] if image_size is None else image_size
    opts = SplitOptions(
        image_size=size,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        augment=augment,
        mean=mean,
        std=std,
    )
    return _loaders()[name](root, opts)
