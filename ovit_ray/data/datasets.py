"""Datasets with fixed, seeded train/val splits.

Every dataset yields `(float32 CxHxW normalised tensor, int label)`. The bundled ones (digits,
lfw) ship with scikit-learn / scikit-image, so nothing is ever downloaded; the folder-backed
ones (imagefolder, cifar10) read only what the user already has under `root`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset, Subset

from .transforms import Transform, pil_eval_transform, pil_train_transform, tensor_train_transform

# Default input resolution per dataset (digits: 8x8 upsampled 2x; lfw: 25x25 upsampled to 32).
DEFAULT_IMAGE_SIZE = {"digits": 16, "lfw": 32, "imagefolder": 224, "cifar10": 32}


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's fixed train/val split plus what a model needs to know about its inputs."""

    train: Dataset
    val: Dataset
    num_classes: int
    image_size: int
    in_chans: int


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


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split when every class has >= 2 samples (otherwise stratification is impossible)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    _, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 else None
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=val_fraction, random_state=seed, stratify=stratify
    )
    return np.sort(train_idx), np.sort(val_idx)


def _tensor_splits(
    images: np.ndarray, labels: np.ndarray, *, image_size: int, seed: int, val_fraction: float, augment: str
) -> DatasetSplits:
    """Upsample grey NxHxW images to 3 channels at `image_size`, normalise with train-split statistics."""
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.from_numpy(labels.astype(np.int64))
    train_idx, val_idx = _split_indices(labels, val_fraction, seed)
    train_idx_t, val_idx_t = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    mean, std = x[train_idx_t].mean(), x[train_idx_t].std()
    x = ((x - mean) / std).expand(-1, 3, -1, -1).contiguous()
    return DatasetSplits(
        train=TensorImageDataset(x[train_idx_t], y[train_idx_t], tensor_train_transform(augment)),
        val=TensorImageDataset(x[val_idx_t], y[val_idx_t]),
        num_classes=int(labels.max()) + 1,
        image_size=image_size,
        in_chans=3,
    )


def _digits(root: str | None, image_size: int, seed: int, val_fraction: float, augment: str) -> DatasetSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return _tensor_splits(
        digits.images / 16.0,
        digits.target,
        image_size=image_size,
        seed=seed,
        val_fraction=val_fraction,
        augment=augment,
    )


def _lfw(root: str | None, image_size: int, seed: int, val_fraction: float, augment: str) -> DatasetSplits:
    from skimage.data import lfw_subset

    images = lfw_subset()  # 100 faces followed by 100 non-faces
    labels = np.repeat(np.array([1, 0]), len(images) // 2)
    return _tensor_splits(
        images, labels, image_size=image_size, seed=seed, val_fraction=val_fraction, augment=augment
    )


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


def _imagefolder(
    root: str | None, image_size: int, seed: int, val_fraction: float, augment: str
) -> DatasetSplits:
    from torchvision.datasets import ImageFolder

    path = _require_root("imagefolder", root)
    train_view = ImageFolder(path, transform=pil_train_transform(augment, image_size))
    val_view = ImageFolder(path, transform=pil_eval_transform(image_size))
    train_idx, val_idx = _split_indices(np.asarray(train_view.targets), val_fraction, seed)
    return DatasetSplits(
        train=Subset(train_view, train_idx.tolist()),
        val=Subset(val_view, val_idx.tolist()),
        num_classes=len(train_view.classes),
        image_size=image_size,
        in_chans=3,
    )


def _cifar10(
    root: str | None, image_size: int, seed: int, val_fraction: float, augment: str
) -> DatasetSplits:
    """The official test batch is the val split, so `seed` and `val_fraction` do not apply."""
    from torchvision.datasets import CIFAR10

    path = _require_root("cifar10", root, must_contain="cifar-10-batches-py")
    return DatasetSplits(
        train=CIFAR10(path, train=True, download=False, transform=pil_train_transform(augment, image_size)),
        val=CIFAR10(path, train=False, download=False, transform=pil_eval_transform(image_size)),
        num_classes=10,
        image_size=image_size,
        in_chans=3,
    )


_LOADERS: dict[str, Callable[[str | None, int, int, float, str], DatasetSplits]] = {
    "digits": _digits,
    "lfw": _lfw,
    "imagefolder": _imagefolder,
    "cifar10": _cifar10,
}
DATASET_NAMES = tuple(_LOADERS)


def load_dataset(
    name: str = "digits",
    *,
    root: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    augment: str = "none",
) -> DatasetSplits:
    """Load `name` with a deterministic train/val split; `augment` (none|light|deit) affects train only."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    size = DEFAULT_IMAGE_SIZE[name] if image_size is None else image_size
    return _LOADERS[name](root, size, seed, val_fraction, augment)
