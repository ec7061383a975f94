"""Shared fixtures: small synthetic data in the exact official file formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` (uint8) as an idx file: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 uint8 images of 10 classes (a class-specific bar pattern plus noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.float64)
    for c in range(10):
        rows = labels == c
        pattern = np.zeros((28, 28))
        pattern[6 + c : 9 + c, 6:22] = 1.0  # a horizontal bar whose height codes the class
        pattern[6:22, 12:15] = 0.6
        images[rows] = pattern
    images += 0.1 * rng.random((n, 28, 28))
    return (np.clip(images, 0, 1) * 255).astype(np.uint8), labels


def make_mnist_root(root: Path, n_train: int = 400, n_test: int = 200, compress: bool = False) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A data root with small synthetic MNIST idx files (400 train / 200 test)."""
    return make_mnist_root(tmp_path / "data")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


TINY = [
    ("model.hidden_dim", 32), ("model.summary_dim", 16), ("model.summary_hidden", [32]), ("model.z_dim", 4),
    ("data.validation_size", 100), ("data.context_size", 5),
    ("train.batch_size", 20), ("train.max_steps", 6), ("train.validate_every", 3), ("train.checkpoint_every", 2),
    ("train.val_examples", 20), ("train.val_importance_samples", 4), ("train.val_pool_size", 30),
    ("train.context_pool_size", 30),
    ("evaluation.test_examples", 20), ("evaluation.importance_samples", 4), ("evaluation.pool_size", 40),
    ("probe.train_examples", 100), ("probe.test_examples", 50), ("probe.pool_size", 40), ("probe.max_iter", 50),
]
"""Config overrides for tiny runs on the synthetic data."""
