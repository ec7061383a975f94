"""Transformed images as a :class:`~metavae.data.task.Task`: the paper's MNIST meta-splits.

Every transformation value of a family (rotate, scale, shear) is one distribution: base images
under that transformation, transformed on the fly. Its ``"train"`` part is the transformed train
images, its ``"test"`` part the transformed test images. The meta-split's training values get
decoders ``0 … D−1`` in grid order; the other values are held out. Distribution names are
``"<family>=<value>"``, e.g. ``"rotate=-160"``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from metavae.config.loading import to_dict
from metavae.data.context import sample_without_replacement
from metavae.data.families import GRIDS, TransformedImages, split_values
from metavae.data.mnist import ImageSplit, load_split
from metavae.data.task import HELD_OUT, Batch, Part, check_batch_sizes, sample_batch
from metavae.errors import ConfigError

if TYPE_CHECKING:
    from metavae.config import DataConfig, TrainConfig

__all__ = ["ImageFamilyTask", "load_images"]


@lru_cache(maxsize=4)
def _cached_split(root: str, dataset: str, train: bool) -> ImageSplit:
    return load_split(root, train=train, dataset="MNIST" if dataset == "mnist" else "FashionMNIST")


def load_images(config: DataConfig, root: str | os.PathLike[str]) -> tuple[ImageSplit, ImageSplit]:
    """The base train and test images of ``config.dataset`` (cached per process)."""
    return _cached_split(str(root), config.dataset, True), _cached_split(str(root), config.dataset, False)


class ImageFamilyTask:
    """A family/meta-split of transformed images (:class:`~metavae.data.task.Task`).

    Training distributions get decoders ``0 … D−1`` in grid order. The validation data is
    ``validation_size`` images held out of the train part (default; the same base images for
    every distribution, never used as training queries), or the first ``validation_size`` images
    of the test part. Batches are ``x: (B, 1, H, W)`` floats in [0, 1] with digit labels.
    """

    def __init__(self, config: DataConfig, train: ImageSplit, test: ImageSplit, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        if config.train_subset is not None:
            train = ImageSplit(train.images[: config.train_subset], train.labels[: config.train_subset])
        self.images = TransformedImages(config.family, GRIDS[config.family], train, test)
        train_values, held_out = split_values(config.family, config.split)
        grid = GRIDS[config.family]
        self.train_distributions = torch.tensor([grid.index(v) for v in train_values])
        self.held_out_distributions = torch.tensor([grid.index(v) for v in held_out])
        n = len(train)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        if config.validation == "train_holdout":
            self.val_part, self.val_index = "train", perm[: config.validation_size].sort().values
            self.train_index = perm[config.validation_size :].sort().values
        else:
            self.val_part = "test"
            self.val_index = torch.arange(min(config.validation_size, len(test)))
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
        return {"data": to_dict(self.config), "seed": self.seed, "train_images": len(self.images.train),
                "test_images": len(self.images.test), "distributions": self.distribution_names(),
                "held_out": self.held_out_names()}

    def to(self, device: torch.device) -> ImageFamilyTask:
        """Keep the base images on ``device``; the transforms then run there."""
        self.images.train = ImageSplit(self.images.train.images.to(device), self.images.train.labels.to(device))
        self.images.test = ImageSplit(self.images.test.images.to(device), self.images.test.labels.to(device))
        return self

    def _fetch(self, part: str):
        def fetch(distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
            index = index.to(self.images.train.images.device)
            return self.images.images(part, distribution, index), self.images.labels(part, index)
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
        return self._fixed_batch("test", torch.arange(len(self.images.test)), num_examples, pool_size)

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
        n = len(self.images.part(part))
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
