"""Families of distributions made by transforming MNIST, with the paper's grids and meta-splits.

Every transformation value is one distribution; it has a train part (the 60k train images,
transformed) and a test part (the 10k test images, transformed). A meta-split divides the grid
into *training* values (each gets a decoder) and *held-out* values (seen only by the probe).
Grids and splits: Wu et al. (2020), PAPER.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metavae.data.mnist import ImageSplit
from metavae.data.transforms import transform_images
from metavae.errors import ConfigError

__all__ = ["FAMILIES", "SPLITS", "SPLIT_ALIASES", "GRIDS", "TRAIN_VALUES", "IDENTITY", "canonical_split", "split_values", "TransformedImages"]


FAMILIES = ("rotate", "scale", "shear")
SPLITS = ("interleaved", "sparse", "contiguous")
SPLIT_ALIASES = {"standard": "interleaved", "disjoint": "contiguous"}

_ANGLES = tuple(float(a) for a in range(-180, 180, 20))  # 18 values
_SCALES = tuple(round(0.5 + 0.1 * k, 1) for k in range(15))  # 0.5 .. 1.9

GRIDS: dict[str, tuple[float, ...]] = {"rotate": _ANGLES, "scale": _SCALES, "shear": _ANGLES}

#: The training values of each (family, split); the held-out values are the rest of the grid.
_ANGLE_TRAIN = {
    "interleaved": tuple(float(a) for a in range(-180, 180, 40)),
    "sparse": (-160.0, -80.0, 0.0, 80.0, 160.0),
    "contiguous": tuple(float(a) for a in range(-180, 1, 20)),
}
TRAIN_VALUES: dict[tuple[str, str], tuple[float, ...]] = {
    **{("rotate", s): v for s, v in _ANGLE_TRAIN.items()},
    **{("shear", s): v for s, v in _ANGLE_TRAIN.items()},
    ("scale", "interleaved"): _SCALES[0::2],
    ("scale", "sparse"): (0.6, 1.0, 1.4, 1.8),
    ("scale", "contiguous"): _SCALES[:8],
}

#: The untransformed value of each family (the default reference of the invariance probe).
IDENTITY = {"rotate": 0.0, "scale": 1.0, "shear": 0.0}


def canonical_split(split: str) -> str:
    """Map ``standard``/``disjoint`` to ``interleaved``/``contiguous``; reject unknown names."""
    split = SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)} (aliases: standard, disjoint)")
    return split


def split_values(family: str, split: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(training values, held-out values)`` of a family's meta-split, each in grid order."""
    if family not in GRIDS:
        raise ConfigError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    train = TRAIN_VALUES[(family, canonical_split(split))]
    held_out = tuple(v for v in GRIDS[family] if v not in train)
    return train, held_out


@dataclass
class TransformedImages:
    """A family of distributions: base images under one transformation per distribution.

    ``values[d]`` is distribution d's transformation value. Images are stored once (uint8) and
    transformed on the fly in batches, so memory does not grow with the number of values.
    """

    family: str
    values: tuple[float, ...]
    train: ImageSplit
    test: ImageSplit

    def __post_init__(self) -> None:
        self._values = torch.tensor(self.values, dtype=torch.float64)

    @property
    def num_distributions(self) -> int:
        return len(self.values)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, *self.train.images.shape[1:])  # type: ignore[return-value]

    def part(self, name: str) -> ImageSplit:
        """``"train"`` or ``"test"`` base images."""
        if name not in ("train", "test"):
            raise ValueError(f"unknown part {name!r}: expected 'train' or 'test'")
        return self.train if name == "train" else self.test

    def images(self, part: str, distribution: Tensor, index: Tensor) -> Tensor:
        """Transformed images; ``distribution`` and ``index`` of shape ``(n,)`` → ``(n, 1, H, W)``."""
        base = self.part(part).images[index]
        return transform_images(base, self.family, self._values[distribution])

    def labels(self, part: str, index: Tensor) -> Tensor:
        return self.part(part).labels[index]
