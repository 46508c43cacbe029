"""Datasets with fixed train/val/test splits (digits, lfw, imagefolder, caltech101, cifar10); nothing is downloaded."""

from .datasets import (
    DATASET_NAMES,
    DEFAULT_IMAGE_SIZE,
    DatasetSplits,
    SplitOptions,
    TensorImageDataset,
    load_dataset,
    num_samples,
)
from .transforms import RECIPES, RandomShift, pil_eval_transform, pil_train_transform, tensor_train_transform

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_IMAGE_SIZE",
    "RECIPES",
    "DatasetSplits",
    "SplitOptions",
    "RandomShift",
    "TensorImageDataset",
    "load_dataset",
    "num_samples",
    "pil_eval_transform",
    "pil_train_transform",
    "tensor_train_transform",
]
