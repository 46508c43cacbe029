"""Fixed, seeded, stratified train / val / test index splits.

The test split is drawn with a constant seed (`TEST_SEED`), independent of the run's split seed, so
every run, whatever its `split_seed`, reports top-1 on the same held-out images; val (the split that
picks checkpoints) is then drawn from the rest with the run's seed.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

TEST_SEED = 0


def _fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def split_off(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) with `size` of `indices` held out, stratified when every class has >= 2 samples."""
    sub = labels[indices]
    _, counts = np.unique(sub, return_counts=True)
    stratify = (
        sub if counts.min() >= 2 and size >= len(counts) and len(indices) - size >= len(counts) else None
    )
    rest, held = train_test_split(indices, test_size=size, random_state=seed, stratify=stratify)
    return np.sort(rest), np.sort(held)


def val_split(
    indices: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) out of a pool that has no official val split (val = `val_fraction` of the pool)."""
    _fraction("val_fraction", val_fraction)
    return split_off(indices, labels, max(1, round(val_fraction * len(indices))), seed)


def three_way_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices; both fractions are of the whole dataset."""
    _fraction("val_fraction", val_fraction)
    _fraction("test_fraction", test_fraction)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    n = len(labels)
    pool, test = split_off(np.arange(n), labels, max(1, round(test_fraction * n)), TEST_SEED)
    train, val = split_off(pool, labels, max(1, round(val_fraction * n)), seed)
    return train, val, test


def per_class_split(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test): `per_class` seeded draws per class for train (at most all but one), the rest test."""
    rng = np.random.default_rng(seed)
    train = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        train.append(rng.choice(members, size=min(per_class, len(members) - 1), replace=False))
    chosen = np.sort(np.concatenate(train))
    return chosen, np.setdiff1d(np.arange(len(labels)), chosen)
