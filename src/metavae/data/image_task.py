"""Batches of a transformed-image meta-split: queries, context sets and decoder indices."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from metavae.config import DataConfig, TrainConfig
from metavae.data.context import Context, pool_rows, sample_without_replacement, subset_index
from metavae.data.families import GRIDS, TransformedImages, split_values
from metavae.data.mnist import ImageSplit, load_split
from metavae.errors import ConfigError


@dataclass(frozen=True)
class Batch:
    """``x: (B, *event)``, ``context`` with B sets, ``decoder_index: (B,)``, ``labels: (B,)``."""

    x: Tensor
    context: Context
    decoder_index: Tensor
    labels: Tensor | None = None


def make_batch(
    images: TransformedImages,
    part: str,
    distributions: Tensor,
    query: Tensor,
    candidates: Tensor,
    set_size: int,
    pool_size: int,
    generator: torch.Generator,
    decoder_index: Tensor | None = None,
) -> Batch:
    """One batch over G distributions, B queries each, contexts from the same distribution and part.

    Args:
        images: the family.
        part: ``"train"`` or ``"test"`` base images.
        distributions: ``(G,)`` grid indices of the distributions.
        query: ``(G, B)`` base-image indices of the queries.
        candidates: ``(n_c,)`` base-image indices contexts are drawn from.
        set_size: N, the context size.
        pool_size: P > 0 → a pool of P candidates per distribution, each example's context a
            uniform N-subset of it; 0 → disjoint per-example contexts (B·N distinct candidates).
        decoder_index: ``(G,)`` decoder of each distribution (default ``arange(G)``).

    Contexts are drawn independently of the queries, so a query can (rarely: with probability
    about ``set_size / n_c`` per example) appear in its own context set.
    """
    g, b = query.shape
    rows = pool_rows(pool_size, b, set_size)
    if rows > candidates.numel():
        raise ConfigError(
            f"context sampling needs {rows} distinct images per distribution but only {candidates.numel()} are "
            "available: lower the pool size or the batch size"
        )
    pool = candidates[sample_without_replacement(g, candidates.numel(), rows, generator)]  # (G, rows)
    index = subset_index(g, b, pool_size, set_size, generator)  # (G·B, N)
    x = images.images(part, distributions.repeat_interleave(b), query.reshape(-1))  # (G·B, 1, H, W)
    elements = images.images(part, distributions.repeat_interleave(rows), pool.reshape(-1))  # (G·rows, 1, H, W)
    dec = torch.arange(g) if decoder_index is None else decoder_index
    return Batch(x, Context(elements, index), dec.repeat_interleave(b), images.labels(part, query.reshape(-1)))


@lru_cache(maxsize=4)
def _cached_split(root: str, dataset: str, train: bool) -> ImageSplit:
    return load_split(root, train=train, dataset="MNIST" if dataset == "mnist" else "FashionMNIST")


def load_images(config: DataConfig, root: str | os.PathLike[str]) -> tuple[ImageSplit, ImageSplit]:
    """The base train and test images of ``config.dataset`` (cached per process)."""
    return _cached_split(str(root), config.dataset, True), _cached_split(str(root), config.dataset, False)


class ImageFamilyTask:
    """The training side of a meta-split: train batches and fixed validation batches.

    Training distributions get decoders ``0 … D−1`` in grid order. The validation data is
    ``validation_size`` images held out of the train part (default), or the test part.
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

    def distribution_names(self) -> list[str]:
        return [f"{self.config.family}={self.images.values[int(d)]:g}" for d in self.train_distributions]

    def check(self, train: TrainConfig) -> None:
        """Refuse (:class:`ConfigError`) training settings this data cannot serve, before any training."""
        n_train, n_val, n = self.train_index.numel(), self.val_index.numel(), self.config.context_size
        if n_train == 0:
            raise ConfigError(f"config key 'data.validation_size': {self.config.validation_size} leaves no training images "
                              f"(the train part has {n_train + n_val}); choose a smaller value")
        self.batches_per_epoch(train.batch_size)
        rows = pool_rows(train.context_pool_size, train.batch_size, n)
        if rows > n_train:
            key = "train.context_pool_size" if train.context_pool_size else "train.batch_size"
            raise ConfigError(f"config key '{key}': the training contexts need {rows} distinct images per distribution "
                              f"but there are {n_train}; choose a smaller value")
        rows = pool_rows(train.val_pool_size, min(train.val_examples, n_val), n)
        if rows > n_val:
            key = "train.val_pool_size" if train.val_pool_size else "train.val_examples"
            raise ConfigError(f"config key '{key}': the validation contexts need {rows} distinct images per distribution "
                              f"but there are {n_val} validation images; choose a smaller value")

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

    def train_batch(self, epoch: int, step_in_epoch: int, batch_size: int, pool_size: int, generator: torch.Generator) -> Batch:
        """Batch ``step_in_epoch`` of ``epoch``: ``batch_size`` queries from every training distribution."""
        order = self._epoch_order(epoch)[:, step_in_epoch * batch_size : (step_in_epoch + 1) * batch_size]
        query = self.train_index[order]  # (D, B)
        return make_batch(self.images, "train", self.train_distributions, query, self.train_index,
                          self.config.context_size, pool_size, generator)

    def evaluation_batch(self, part: str, index: Tensor, num_examples: int, pool_size: int) -> Batch:
        """A fixed batch (same seed every call) of ``num_examples`` images per training distribution,
        drawn from images ``index`` of ``part``, with contexts from the same images.

        Validation: ``(self.val_part, self.val_index)``; test log-likelihood: ``("test", all)``.
        """
        gen = torch.Generator().manual_seed(self.seed + 7919)
        n = min(num_examples, index.numel())
        query = index[sample_without_replacement(self.num_decoders, index.numel(), n, gen)]
        return make_batch(self.images, part, self.train_distributions, query, index,
                          self.config.context_size, pool_size, gen)
