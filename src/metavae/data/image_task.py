"""A family of image distributions as a :class:`~metavae.data.task.Task`: the paper's image meta-splits.

Every value of a family is one distribution (:mod:`metavae.data.families`): for MNIST and
Fashion-MNIST a transformation (rotate, scale, shear) of the base images, applied on the fly; for
smallNORB a factor value (elevation, azimuth, lighting), selecting the examples photographed at
it. Its ``"train"`` part comes from the train split, its ``"test"`` part from the test split. The
meta-split's training values get decoders ``0 … D−1`` in grid order; the other values are held
out. Distribution names are ``"<family>=<value>"``, e.g. ``"rotate=-160"`` or ``"azimuth=8"``.

Which data set is read, and which kind of family it makes, is looked up in :data:`DATASETS`
(``data.dataset``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metavae.config.loading import to_dict
from metavae.data.context import sample_without_replacement
from metavae.data.families import GRIDS, FactorSelectedImages, FactorSplit, ImageFamily, TransformedImages, split_values
from metavae.data.mnist import ImageSplit, load_split
from metavae.data.norb import load_smallnorb
from metavae.data.task import HELD_OUT, Batch, Part, check_batch_sizes, sample_batch
from metavae.errors import ConfigError

if TYPE_CHECKING:
    from metavae.config import DataConfig, TrainConfig

__all__ = ["ImageFamilyTask", "ImageDataset", "DATASETS", "load_images"]


@dataclass(frozen=True)
class ImageDataset:
    """How a data set (``data.dataset``) is read and made into a family.

    ``load(root) → (train, test)`` reads the two splits under the data root; ``family(name,
    train, test) → ImageFamily`` builds the family ``name`` over them.
    """

    load: Callable[[Path], tuple[Any, Any]]
    family: Callable[[str, Any, Any], ImageFamily]


def _idx_dataset(directory: str) -> Callable[[Path], tuple[ImageSplit, ImageSplit]]:
    def load(root: Path) -> tuple[ImageSplit, ImageSplit]:
        return load_split(root, train=True, dataset=directory), load_split(root, train=False, dataset=directory)
    return load


def _transformed(family: str, train: ImageSplit, test: ImageSplit) -> TransformedImages:
    return TransformedImages(family, GRIDS[family], train, test)


def _factor_selected(family: str, train: FactorSplit, test: FactorSplit) -> FactorSelectedImages:
    return FactorSelectedImages(family, GRIDS[family], train, test)


#: ``data.dataset`` → how it is read and which kind of family it makes
DATASETS: dict[str, ImageDataset] = {
    "mnist": ImageDataset(_idx_dataset("MNIST"), _transformed),
    "fashion_mnist": ImageDataset(_idx_dataset("FashionMNIST"), _transformed),
    "norb": ImageDataset(load_smallnorb, _factor_selected),
}


@lru_cache(maxsize=4)
def _cached_data(root: str, dataset: str) -> tuple[Any, Any]:
    return DATASETS[dataset].load(Path(root))


def load_images(config: DataConfig, root: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The train and test splits of ``config.dataset`` (cached per process): :class:`ImageSplit`
    for MNIST and Fashion-MNIST, :class:`~metavae.data.families.FactorSplit` for smallNORB."""
    return _cached_data(str(root), config.dataset)


class ImageFamilyTask:
    """A family/meta-split of image distributions (:class:`~metavae.data.task.Task`).

    ``train``/``test``: the splits :func:`load_images` returns for ``config.dataset``; the family is
    built by :data:`DATASETS` (``self.images``, an :class:`~metavae.data.families.ImageFamily`).
    Training distributions get decoders ``0 … D−1`` in grid order. The validation data is
    ``validation_size`` examples held out of each distribution's train part (default; the same
    positions for every distribution — for transformed images the same base images — never used
    as training queries), or the first ``validation_size`` examples of the test part. Batches are
    ``x: (B, 1, H, W)`` floats in [0, 1] with class labels (digit, or smallNORB category).
    """

    def __init__(self, config: DataConfig, train: Any, test: Any, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.images = DATASETS[config.dataset].family(config.family, train, test)
        if config.train_subset is not None:
            self.images = self.images.limit_train(config.train_subset)
        train_values, held_out = split_values(config.family, config.split)
        grid = GRIDS[config.family]
        self.train_distributions = torch.tensor([grid.index(v) for v in train_values])
        self.held_out_distributions = torch.tensor([grid.index(v) for v in held_out])
        n = self.images.size("train")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        if config.validation == "train_holdout":
            self.val_part, self.val_index = "train", perm[: config.validation_size].sort().values
            self.train_index = perm[config.validation_size :].sort().values
        else:
            self.val_part = "test"
            self.val_index = torch.arange(min(config.validation_size, self.images.size("test")))
            self.train_index = torch.arange(n)
        self._epoch: tuple[int, Tensor] | None = None

    @property
    def num_decoders(self) -> int:
        return int(self.train_distributions.numel())

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.images.image_shape

    @property
    def context_size(self) -> int:
        return self.config.context_size

    def name(self, value: float) -> str:
        """The distribution name of a transformation value, e.g. ``"rotate=-160"``."""
        return f"{self.config.family}={value:g}"

    def distribution_names(self) -> list[str]:
        return [self.name(self.images.values[int(d)]) for d in self.train_distributions]

    def held_out_names(self) -> list[str]:
        return [self.name(self.images.values[int(d)]) for d in self.held_out_distributions]

    def check(self, train: TrainConfig) -> None:
        """Refuse (:class:`ConfigError`) training settings this data cannot serve, before any training."""
        n_train, n_val = self.train_index.numel(), self.val_index.numel()
        if n_train == 0:
            raise ConfigError(f"config key 'data.validation_size': {self.config.validation_size} leaves no training images "
                              f"(the train part has {n_train + n_val}); choose a smaller value")
        check_batch_sizes(train, n_train, n_val, self.context_size)

    def batches_per_epoch(self, batch_size: int) -> int:
        if batch_size > self.train_index.numel():
            raise ConfigError(f"config key 'train.batch_size': {batch_size} exceeds the {self.train_index.numel()} "
                              "training images of each distribution; choose a smaller value")
        return self.train_index.numel() // batch_size

    def _epoch_order(self, epoch: int) -> Tensor:
        """``(D, n_train)``: an independent permutation of the train part per distribution and epoch."""
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 1)
            order = torch.rand(self.num_decoders, self.train_index.numel(), generator=gen).argsort(dim=1)
            self._epoch = (epoch, order)
        return self._epoch[1]

    def describe(self) -> dict[str, Any]:
        return {"data": to_dict(self.config), "seed": self.seed, "train_images": self.images.size("train"),
                "test_images": self.images.size("test"), "distributions": self.distribution_names(),
                "held_out": self.held_out_names()}

    def to(self, device: torch.device) -> ImageFamilyTask:
        """Keep the base images on ``device``; the transforms then run there."""
        self.images = self.images.to(device)
        return self

    def _fetch(self, part: str):
        def fetch(distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
            return self.images.fetch(part, distribution, index.to(self.images.device))
        return fetch

    def train_batch(self, epoch: int, step_in_epoch: int, batch_size: int, pool_size: int, generator: torch.Generator) -> Batch:
        """Batch ``step_in_epoch`` of ``epoch``: ``batch_size`` queries from every training distribution."""
        order = self._epoch_order(epoch)[:, step_in_epoch * batch_size : (step_in_epoch + 1) * batch_size]
        query = self.train_index[order]  # (D, B)
        return sample_batch(self._fetch("train"), self.train_distributions, query, self.train_index,
                            self.context_size, pool_size, generator)

    def _fixed_batch(self, part: str, index: Tensor, num_examples: int, pool_size: int) -> Batch:
        """A fixed batch (same seed every call) of ``num_examples`` images per training distribution,
        drawn from images ``index`` of ``part``, with contexts from the same images."""
        gen = torch.Generator().manual_seed(self.seed + 7919)
        n = min(num_examples, index.numel())
        query = index[sample_without_replacement(self.num_decoders, index.numel(), n, gen)]
        return sample_batch(self._fetch(part), self.train_distributions, query, index, self.context_size, pool_size, gen)

    def validation_batch(self, num_examples: int, pool_size: int) -> Batch:
        return self._fixed_batch(self.val_part, self.val_index, num_examples, pool_size)

    def test_batch(self, num_examples: int, pool_size: int) -> Batch:
        return self._fixed_batch("test", torch.arange(self.images.size("test")), num_examples, pool_size)

    def distribution_batch(self, name: str, part: Part, num_examples: int | None, pool_size: int,
                           generator: torch.Generator) -> Batch:
        """Up to ``num_examples`` images of one value's ``part`` (``None``: all), labelled, contexts from the whole part of that value (a pool of at most
        ``pool_size`` of its images). The images are the same base images for every value: of the
        train part a random subset fixed by ``generator.initial_seed()``, of the test part the first
        ``num_examples``; the context sets come from ``generator``."""
        grid = self.images.values
        names = [self.name(v) for v in grid]
        if name not in names:
            raise ValueError(f"name: {name!r} is not a distribution of this task; expected one of {names}")
        dist = names.index(name)
        n = self.images.size(part)
        index = torch.arange(n)
        if num_examples is not None and num_examples < n and part == "train":
            # the same base images for every value (paired comparisons across values): a subset fixed by
            # the generator's seed, not by how much of its stream earlier calls used
            paired = torch.Generator().manual_seed(generator.initial_seed())
            index = torch.randperm(n, generator=paired)[:num_examples].sort().values
        elif num_examples is not None:
            index = index[:num_examples]  # the test part: its first images, the same for every value
        trained = (self.train_distributions == dist).nonzero().flatten()
        decoder = torch.tensor([int(trained[0]) if trained.numel() else HELD_OUT])
        return sample_batch(self._fetch(part), torch.tensor([dist]), index[None], torch.arange(n), self.context_size,
                            min(pool_size, n), generator, decoder_index=decoder)
