"""Families of image distributions with the paper's grids and meta-splits (Wu et al. 2020, PAPER.md §2).

Two kinds of family, both seen by :class:`~metavae.data.image_task.ImageFamilyTask` through the
:class:`ImageFamily` protocol:

- **transformed** (:class:`TransformedImages`; MNIST, Fashion-MNIST): every transformation value
  (rotate, scale, shear) is one distribution; its train part is the 60k train images, transformed,
  its test part the 10k test images, transformed — the same base images for every value;
- **factor-selected** (:class:`FactorSelectedImages`; smallNORB): every value of a recorded factor
  (elevation, azimuth, lighting index) is one distribution, the examples photographed at that
  value; its train part comes from the train split, its test part from the test split (for
  smallNORB the official instance split). Distributions are disjoint sets of examples.

A meta-split divides the grid into *training* values (each gets a decoder) and *held-out* values
(seen only by the probe).

smallNORB grids are *indices*: elevation 0–8 (30°, 35°, …, 70°), azimuth 0–17 (0°, 20°, …, 340°;
the files' azimuth field 0, 2, …, 34 halved), lighting 0–5. The splits follow PAPER.md's table.
One difference from the paper: its Fig. 6 draws azimuth 8 among the *held-out* values of the
sparse split, while the authors' code (and PAPER.md's table) *trains* on it — training values
0, 4, 8, 12, 16, the other 13 held out. We follow the table (the code).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from metavae.data.mnist import ImageSplit
from metavae.data.transforms import transform_images
from metavae.errors import ConfigError, DataError

__all__ = ["FAMILIES", "NORB_FAMILIES", "DATASET_FAMILIES", "SPLITS", "SPLIT_ALIASES", "GRIDS", "TRAIN_VALUES", "IDENTITY",
           "canonical_split", "split_values", "reference_value", "ImageFamily", "TransformedImages", "FactorSplit",
           "FactorSelectedImages"]


#: the transformation families (MNIST, Fashion-MNIST)
FAMILIES = ("rotate", "scale", "shear")
#: the smallNORB factor families
NORB_FAMILIES = ("elevation", "azimuth", "lighting")
#: the families each data set (``data.dataset``) offers
DATASET_FAMILIES: dict[str, tuple[str, ...]] = {"mnist": FAMILIES, "fashion_mnist": FAMILIES, "norb": NORB_FAMILIES}
SPLITS = ("interleaved", "sparse", "contiguous")
SPLIT_ALIASES = {"standard": "interleaved", "disjoint": "contiguous"}

_ANGLES = tuple(float(a) for a in range(-180, 180, 20))  # 18 values
_SCALES = tuple(round(0.5 + 0.1 * k, 1) for k in range(15))  # 0.5 .. 1.9


def _indices(n: int) -> tuple[float, ...]:
    return tuple(float(i) for i in range(n))


GRIDS: dict[str, tuple[float, ...]] = {"rotate": _ANGLES, "scale": _SCALES, "shear": _ANGLES,
                                       "elevation": _indices(9), "azimuth": _indices(18), "lighting": _indices(6)}

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
    # smallNORB (indices; PAPER.md's table: interleaved / sparse / contiguous)
    ("elevation", "interleaved"): (0.0, 2.0, 4.0, 6.0, 8.0),
    ("elevation", "sparse"): (1.0, 4.0, 7.0),
    ("elevation", "contiguous"): _indices(5),
    ("azimuth", "interleaved"): _indices(18)[0::2],
    ("azimuth", "sparse"): (0.0, 4.0, 8.0, 12.0, 16.0),  # 8 trained on, as the code (the paper's figure holds it out)
    ("azimuth", "contiguous"): _indices(9),
    ("lighting", "interleaved"): (0.0, 2.0, 4.0),
    ("lighting", "sparse"): (1.0, 4.0),
    ("lighting", "contiguous"): _indices(3),
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
        raise ConfigError(f"unknown family {family!r}: choose one of {', '.join(GRIDS)}")
    train = TRAIN_VALUES[(family, canonical_split(split))]
    held_out = tuple(v for v in GRIDS[family] if v not in train)
    return train, held_out


def reference_value(family: str, split: str) -> float:
    """The default reference value of the invariance probe: the identity transformation of a
    transformation family; for a factor family (no identity) its first training value."""
    return IDENTITY[family] if family in IDENTITY else split_values(family, split)[0][0]


@runtime_checkable
class ImageFamily(Protocol):
    """What :class:`~metavae.data.image_task.ImageFamilyTask` needs of a family of image distributions.

    Every distribution has the same number of examples in each part (:meth:`size`), addressed by
    position ``0 … size(part) − 1``; ``values[d]`` is distribution d's grid value.
    """

    family: str
    values: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(1, H, W)``."""
        ...

    @property
    def device(self) -> torch.device:
        ...

    def size(self, part: str) -> int:
        """Examples of each distribution in ``part`` (``"train"`` or ``"test"``)."""
        ...

    def fetch(self, part: str, distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Example ``index[k]`` of distribution ``distribution[k]``'s ``part``, both ``(n,)`` →
        images ``(n, 1, H, W)`` in [0, 1] and labels ``(n,)``."""
        ...

    def limit_train(self, n: int) -> ImageFamily:
        """The same family with only the first ``n`` examples of each distribution's train part."""
        ...

    def to(self, device: torch.device) -> ImageFamily:
        """The same family with its examples on ``device``."""
        ...


@dataclass
class _PartsOfImages:
    """What every image family holds: its name, its values (one distribution each) and the train
    and test splits of base images ``(N, H, W)`` with their labels."""

    family: str
    values: tuple[float, ...]
    train: Any
    test: Any

    @property
    def num_distributions(self) -> int:
        return len(self.values)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, *self.train.images.shape[1:])  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return self.train.images.device

    def part(self, name: str) -> Any:
        """``"train"`` or ``"test"`` base images."""
        if name not in ("train", "test"):
            raise ValueError(f"unknown part {name!r}: expected 'train' or 'test'")
        return self.train if name == "train" else self.test


@dataclass
class TransformedImages(_PartsOfImages):
    """A family of distributions: base images under one transformation per distribution.

    ``values[d]`` is distribution d's transformation value. Images are stored once (uint8) and
    transformed on the fly in batches, so memory does not grow with the number of values.
    """

    train: ImageSplit
    test: ImageSplit

    def __post_init__(self) -> None:
        self._values = torch.tensor(self.values, dtype=torch.float64)

    def images(self, part: str, distribution: Tensor, index: Tensor) -> Tensor:
        """Transformed images; ``distribution`` and ``index`` of shape ``(n,)`` → ``(n, 1, H, W)``."""
        base = self.part(part).images[index]
        return transform_images(base, self.family, self._values[distribution])

    def labels(self, part: str, index: Tensor) -> Tensor:
        return self.part(part).labels[index]

    # the ImageFamily protocol: example ``index`` of every distribution is base image ``index``
    def size(self, part: str) -> int:
        return len(self.part(part))

    def fetch(self, part: str, distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        return self.images(part, distribution, index), self.labels(part, index)

    def limit_train(self, n: int) -> TransformedImages:
        return replace(self, train=ImageSplit(self.train.images[:n], self.train.labels[:n]))

    def to(self, device: torch.device) -> TransformedImages:
        return replace(self, train=ImageSplit(self.train.images.to(device), self.train.labels.to(device)),
                       test=ImageSplit(self.test.images.to(device), self.test.labels.to(device)))


@dataclass(frozen=True)
class FactorSplit:
    """Labelled images with discrete factors, e.g. one smallNORB split.

    ``images``: uint8 ``(n, H, W)``; ``labels``: int64 ``(n,)``; ``factors``: name → int64 ``(n,)``
    (for smallNORB ``instance``, ``elevation``, ``azimuth`` (index 0–17), ``lighting``, ``camera``).
    """

    images: Tensor
    labels: Tensor
    factors: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device) -> FactorSplit:
        return FactorSplit(self.images.to(device), self.labels.to(device), {k: v.to(device) for k, v in self.factors.items()})


@dataclass
class FactorSelectedImages(_PartsOfImages):
    """A family of distributions, one per value of a factor: distribution d holds the examples
    whose factor ``family`` equals ``values[d]`` (an integer code), in their order in the split.

    Every value must select the same number of examples in a part (true of smallNORB, a full
    factorial design), so that positions ``0 … size(part) − 1`` address every distribution alike;
    otherwise :class:`~metavae.errors.DataError`. Images are stored once (uint8) and scaled to
    [0, 1] when fetched.
    """

    train: FactorSplit
    test: FactorSplit

    def __post_init__(self) -> None:
        self._rows = {part: self._select(part) for part in ("train", "test")}

    def _select(self, part: str) -> Tensor:
        """``(D, n)``: the rows of each value's examples, in order."""
        split = self.part(part)
        if self.family not in split.factors:
            raise DataError(f"the {part} split has no factor {self.family!r} (it has {', '.join(split.factors)})")
        codes = torch.tensor([int(v) for v in self.values], device=split.images.device)
        match = split.factors[self.family][None, :] == codes[:, None]  # (D, N)
        counts = match.sum(1)
        if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
            raise DataError(f"the {part} split has {counts.tolist()} examples for the {self.family} values "
                            f"{[int(v) for v in self.values]}: every value needs the same number (≥ 1) of examples")
        return match.nonzero()[:, 1].reshape(len(self.values), -1)  # row-major: value by value, rows in order

    def rows(self, part: str) -> Tensor:
        """``(D, size(part))``: row ``[d, i]`` is the split row of distribution d's example i."""
        return self._rows[part]

    def size(self, part: str) -> int:
        return int(self._rows[part].shape[1])

    def fetch(self, part: str, distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        split = self.part(part)
        rows = self._rows[part][distribution.to(self.device), index.to(self.device)]  # (n,)
        return split.images[rows].unsqueeze(1).float() / 255.0, split.labels[rows]

    def limit_train(self, n: int) -> FactorSelectedImages:
        limited = replace(self)
        limited._rows = {**self._rows, "train": self._rows["train"][:, :n]}
        return limited

    def to(self, device: torch.device) -> FactorSelectedImages:
        moved = replace(self, train=self.train.to(device), test=self.test.to(device))
        moved._rows = {part: rows.to(device) for part, rows in self._rows.items()}
        return moved
