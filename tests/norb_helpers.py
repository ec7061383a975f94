"""Synthetic smallNORB files in the exact official binary-matrix format, with marker pixels.

Every file is written here with plain numpy (no library code): little-endian int32 magic
(``0x1E3D4C55`` uint8 / ``0x1E3D4C54`` int32), int32 ndim, max(3, ndim) int32 dims (unused = 1),
the data. Pair ``i`` of a part has

- category ``(i + i // 5) % 5``; instance ``INSTANCES[part][(i // 2) % 5]``; elevation ``i % 9``;
  azimuth index ``(5 i) % 18`` (written as ``2 ·`` that); lighting ``(i // 3) % 6`` — with a
  number of pairs that is a multiple of 18, every value of every factor has as many pairs;
- two 96×96 images of seeded noise carrying constant 3×3 marker blocks (each block is one pixel
  of the 32×32 area-resized image, exactly): block (0, 0) = the part (``PART_LEVEL``), blocks
  (0, 1) and (0, 2) = ``i % 256`` and ``i // 256``, block (0, 3) = the camera (``CAMERA_LEVEL``).

:func:`decode` reads these markers off preprocessed images in [0, 1].
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

UINT8_MAGIC, INT32_MAGIC = 0x1E3D4C55, 0x1E3D4C54
PREFIX = {"train": "smallnorb-5x46789x9x18x6x2x96x96-training", "test": "smallnorb-5x01235x9x18x6x2x96x96-testing"}
INSTANCES = {"train": (4, 6, 7, 8, 9), "test": (0, 1, 2, 3, 5)}
PART_LEVEL = {"train": 60, "test": 180}
CAMERA_LEVEL = (100, 200)


def header(magic: int, shape: tuple[int, ...]) -> bytes:
    dims = list(shape) + [1] * (3 - len(shape))
    return np.array([magic, len(shape), *dims], dtype="<i4").tobytes()


def write_matrix(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """``array`` (uint8 or int32) as a smallNORB binary matrix at ``path`` (``path.gz`` if ``compress``)."""
    if array.dtype == np.uint8:
        data = header(UINT8_MAGIC, array.shape) + array.tobytes()
    else:
        data = header(INT32_MAGIC, array.shape) + array.astype("<i4").tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)
    return path


@dataclass(frozen=True)
class Pairs:
    dat: np.ndarray  # (n, 2, 96, 96) uint8
    cat: np.ndarray  # (n,) int32
    info: np.ndarray  # (n, 4) int32: instance, elevation, azimuth (0, 2, …, 34), lighting


def synthetic_pairs(part: str, n: int, seed: int = 0) -> Pairs:
    i = np.arange(n)
    cat = ((i + i // 5) % 5).astype(np.int32)
    info = np.stack([np.array(INSTANCES[part])[(i // 2) % 5], i % 9, 2 * ((5 * i) % 18), (i // 3) % 6], axis=1).astype(np.int32)
    dat = np.random.default_rng(seed).integers(0, 256, size=(n, 2, 96, 96), dtype=np.uint8)
    dat[:, :, 0:3, 0:3] = PART_LEVEL[part]
    dat[:, :, 0:3, 3:6] = (i % 256)[:, None, None, None]
    dat[:, :, 0:3, 6:9] = (i // 256)[:, None, None, None]
    for camera, level in enumerate(CAMERA_LEVEL):
        dat[:, camera, 0:3, 9:12] = level
    return Pairs(dat, cat, info)


def write_smallnorb(folder: Path, n_train: int = 36, n_test: int = 36, compress: bool = False) -> dict[str, Pairs]:
    """The six files of a synthetic smallNORB (``n_train`` / ``n_test`` pairs) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        pairs = synthetic_pairs(part, n, seed)
        for kind, array in (("dat", pairs.dat), ("cat", pairs.cat), ("info", pairs.info)):
            write_matrix(folder / f"{PREFIX[part]}-{kind}.mat", array, compress)
        out[part] = pairs
    return out


def make_norb_root(root: Path, n_train: int = 36, n_test: int = 36) -> tuple[Path, dict[str, Pairs]]:
    """A data root with the synthetic files in ``<root>/smallNORB/raw``."""
    return root, write_smallnorb(root / "smallNORB" / "raw", n_train, n_test)


@dataclass(frozen=True)
class Markers:
    is_test: np.ndarray  # (n,) bool
    pair: np.ndarray  # (n,) pair index within its part
    camera: np.ndarray  # (n,) 0 or 1

    @property
    def row(self) -> np.ndarray:
        """The example's row within its part if both stereo images are examples, pair-major."""
        return 2 * self.pair + self.camera


def decode(x: torch.Tensor) -> Markers:
    """Markers of preprocessed images ``(n, 1, 32, 32)`` (or ``(n, 32, 32)``) in [0, 1]."""
    v = np.rint(x.detach().reshape(x.shape[0], 32, 32).double().cpu().numpy() * 255).astype(int)
    part = v[:, 0, 0]
    assert set(part.tolist()) <= set(PART_LEVEL.values()), f"not a marker image: part level {set(part.tolist())}"
    camera = v[:, 0, 3]
    assert set(camera.tolist()) <= set(CAMERA_LEVEL), f"not a marker image: camera level {set(camera.tolist())}"
    return Markers(part == PART_LEVEL["test"], v[:, 0, 1] + 256 * v[:, 0, 2], (camera == CAMERA_LEVEL[1]).astype(int))


FACTOR_COLUMN = {"elevation": 1, "azimuth": 2, "lighting": 3}


def factor_value(pairs: Pairs, family: str, pair: np.ndarray) -> np.ndarray:
    """The grid index of ``family`` for pairs ``pair`` (azimuth halved), read off the written info."""
    values = pairs.info[pair, FACTOR_COLUMN[family]]
    return values // 2 if family == "azimuth" else values
