"""Bring your own family: K user-given data sets, one per distribution, as a :class:`~metavae.data.task.Task`.

A researcher with K related data sets (a data set per site, per sensor, per style, per
simulator setting, …) trains one MetaVAE over them with no subclassing::

    task = DatasetFamily(train=[x_0, x_1, …], test=[t_0, t_1, …], held_out=[7, 8])

Each entry is one distribution's examples: a tensor (or numpy array) ``(n_k, *event)``, a pair
``(x, labels)`` with ``labels: (n_k,)`` integers, or a ``torch.utils.data.Dataset`` whose items
are ``x`` or ``(x, label)``. Data sets are read once into memory (a ``Dataset`` item by item) and
stored as one float32 tensor per part; uint8 data are read as grey levels ``/255``. The image
models' likelihood is Bernoulli on values in [0, 1] (see
:func:`~metavae.models.base.bernoulli_grey_levels`), so by default values outside [0, 1] are
refused; ``value_range=None`` accepts any finite values (for models with other likelihoods, e.g.
the exponential families of :mod:`metavae.data.expfam`).

Distributions not in ``held_out`` are *training* distributions, with decoders ``0 … D−1`` in their
order of appearance; a ``validation_fraction`` of each one's train part (a seeded random subset,
at least one example) is kept out of training for model selection. Context sets are drawn by the
same pooled sampler as every task (:func:`~metavae.data.task.sample_batch`), from the query's own
distribution and part. Distributions may have different sizes: one epoch is as many steps as
the *smallest* training distribution fills (each step takes ``batch_size`` queries from every
training distribution, so all are weighted equally); larger ones contribute a fresh random
subset each epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from metavae.data.context import sample_without_replacement
from metavae.data.task import HELD_OUT, Batch, Part, check_batch_sizes, sample_batch

if TYPE_CHECKING:
    from metavae.config import TrainConfig

__all__ = ["DatasetFamily", "DataLike"]

#: one distribution's examples: ``x``, ``(x, labels)`` or a ``Dataset`` of ``x`` / ``(x, label)`` items
DataLike = Union[Tensor, np.ndarray, "tuple[Any, Any]", Dataset]


def _as_examples(data: Any, where: str, value_range: tuple[float, float] | None = (0.0, 1.0)) -> tuple[Tensor, Tensor | None]:
    """One distribution's ``(x: (n, *event) float32, labels: (n,) long or None)``."""
    labels: Any = None
    if isinstance(data, Dataset) and not isinstance(data, (Tensor, tuple, list)):
        try:
            items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{where}: a Dataset must have a length and integer indexing (a map-style Dataset)") from None
        if not items:
            raise ValueError(f"{where}: the Dataset is empty")
        try:
            if isinstance(items[0], (tuple, list)):
                x = torch.stack([torch.as_tensor(item[0]) for item in items])
                labels = torch.as_tensor([int(item[1]) for item in items])
            else:
                x = torch.stack([torch.as_tensor(item) for item in items])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{where}: the Dataset's items must be tensors (or arrays) of one shape, or (x, label) pairs; "
                             f"got {type(items[0]).__name__} ({' '.join(str(exc).split())[:120]})") from None
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"{where}: expected a tensor x or a pair (x, labels), got a sequence of length {len(data)}")
        x, labels = torch.as_tensor(data[0]), torch.as_tensor(data[1])
    elif isinstance(data, (Tensor, np.ndarray)):
        x = torch.as_tensor(data)
    else:
        raise ValueError(f"{where}: expected a tensor, an (x, labels) pair or a torch.utils.data.Dataset, "
                         f"got {type(data).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{where}: expected examples of shape (n, *event) with n ≥ 1, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ValueError(f"{where}: expected floating-point values in [0, 1] or uint8 grey levels, got dtype {x.dtype}")
    x = x.to(torch.float32)
    lo, hi = float(x.min()), float(x.max())
    if value_range is None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{where}: values must be finite, got NaN or infinity")
    elif not (value_range[0] <= lo and hi <= value_range[1]):  # also refuses NaN
        raise ValueError(f"{where}: values must lie in [{value_range[0]:g}, {value_range[1]:g}] (value_range; the image "
                         f"models' Bernoulli likelihood needs [0, 1]), got range [{lo:g}, {hi:g}]")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (x.shape[0],) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{where}: expected integer labels of shape ({x.shape[0]},), got {labels.dtype} "
                             f"of shape {tuple(labels.shape)}")
        labels = labels.to(torch.long)
    return x, labels


class DatasetFamily:
    """K data sets as a family of distributions (:class:`~metavae.data.task.Task`).

    Args:
        train: K entries, distribution k's train part (see the module docstring for the forms).
        test: K entries, distribution k's test part (needed by the probe and the test
            log-likelihood); ``None`` if there is none.
        held_out: indices of the distributions never trained on (evaluated by the probe).
        names: K distinct names (default ``"0"``, ``"1"``, …).
        context_size: N, the size of every context set.
        validation_fraction: share of each training distribution's train part kept for validation.
        seed: seeds the validation split, the epoch orders and the fixed evaluation batches.
        value_range: the interval values must lie in (default [0, 1], the image models'
            Bernoulli likelihood), or ``None`` for any finite values.

    Raises:
        ValueError: naming the argument and entry, for mismatched event shapes, labels, names,
            held-out indices or values outside ``value_range``.
    """

    def __init__(
        self,
        train: Sequence[DataLike],
        test: Sequence[DataLike] | None = None,
        *,
        held_out: Sequence[int] = (),
        names: Sequence[str] | None = None,
        context_size: int = 10,
        validation_fraction: float = 0.1,
        seed: int = 0,
        value_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        k = len(train)
        if k == 0:
            raise ValueError("train: expected one entry per distribution, got none")
        if test is not None and len(test) != k:
            raise ValueError(f"test: expected {k} entries (one per distribution, as train), got {len(test)}")
        if any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) for h in held_out):
            raise ValueError(f"held_out: expected integer indices, got {list(held_out)}")
        held = sorted({int(h) for h in held_out})
        if len(held) != len(held_out) or any(not 0 <= h < k for h in held):
            raise ValueError(f"held_out: expected distinct indices in [0, {k}), got {list(held_out)}")
        if len(held) == k:
            raise ValueError(f"held_out: all {k} distributions are held out; at least one must be trained on")
        if isinstance(names, str):
            raise ValueError(f"names: expected a sequence of {k} names, got the string {names!r}")
        self.names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
        if len(self.names) != k or len(set(self.names)) != k:
            raise ValueError(f"names: expected {k} distinct names, got {list(self.names)}")
        if isinstance(context_size, bool) or not isinstance(context_size, (int, np.integer)) or context_size < 1:
            raise ValueError(f"context_size: expected an integer ≥ 1, got {context_size!r}")
        context_size = int(context_size)
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction: expected a number in (0, 1), got {validation_fraction!r}")
        self._context_size = context_size
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.held_out = held
        self.trained = [i for i in range(k) if i not in held]

        parts = {"train": [_as_examples(d, f"train[{i}]", value_range) for i, d in enumerate(train)]}
        if test is not None:
            parts["test"] = [_as_examples(d, f"test[{i}]", value_range) for i, d in enumerate(test)]
        self._event_shape = tuple(parts["train"][0][0].shape[1:])
        has_labels = parts["train"][0][1] is not None
        for part, entries in parts.items():
            for i, (x, y) in enumerate(entries):
                if tuple(x.shape[1:]) != self._event_shape:
                    raise ValueError(f"{part}[{i}]: expected examples of shape {self._event_shape} (as train[0]), "
                                     f"got {tuple(x.shape[1:])}")
                if (y is not None) != has_labels:
                    raise ValueError(f"{part}[{i}]: {'has no' if has_labels else 'has'} labels but train[0] "
                                     f"{'has' if has_labels else 'has none'}; give labels for every distribution or none")
        for part, entries in parts.items():
            for i, (x, _) in enumerate(entries):
                if x.shape[0] < context_size:
                    raise ValueError(f"{part}[{i}]: {x.shape[0]} example(s), fewer than context_size {context_size}: "
                                     "a context set is drawn from a distribution's part; give more examples")
        # one tensor per part; distribution i's examples are rows offset[i] … offset[i] + size[i] − 1
        self._x = {p: torch.cat([x for x, _ in e]) for p, e in parts.items()}
        self._y = {p: torch.cat([y for _, y in e]) if has_labels else None for p, e in parts.items()}  # type: ignore[misc]
        self._size = {p: [x.shape[0] for x, _ in e] for p, e in parts.items()}
        self._offset = {p: np.concatenate([[0], np.cumsum(s)[:-1]]).tolist() for p, s in self._size.items()}

        # validation: a seeded random subset of each training distribution's train part
        gen = torch.Generator().manual_seed(seed)
        train_ids, val_ids = [], []
        for i in self.trained:
            n, offset = self._size["train"][i], self._offset["train"][i]
            n_val = max(1, int(round(validation_fraction * n)))
            if n_val >= n:
                raise ValueError(f"train[{i}]: {n} example(s) leave none for training after validation_fraction "
                                 f"{validation_fraction}; give more examples")
            perm = torch.randperm(n, generator=gen) + offset
            val_ids.append(perm[:n_val].sort().values)
            train_ids.append(perm[n_val:].sort().values)
        self._train_rows, self._train_counts = _pad(train_ids)
        self._val_rows, self._val_counts = _pad(val_ids)
        self._epoch: tuple[int, Tensor] | None = None
        digest = hashlib.sha256()
        for part in sorted(self._x):  # a fingerprint of the data, so that a resumed run is refused other data
            digest.update(self._x[part].numpy().tobytes())
            if self._y[part] is not None:
                digest.update(self._y[part].numpy().tobytes())  # type: ignore[union-attr]
        self._digest = digest.hexdigest()

    # ------------------------------------------------------------------ the Task protocol
    @property
    def num_decoders(self) -> int:
        return len(self.trained)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._event_shape

    @property
    def context_size(self) -> int:
        return self._context_size

    def distribution_names(self) -> list[str]:
        return [self.names[i] for i in self.trained]

    def held_out_names(self) -> list[str]:
        return [self.names[i] for i in self.held_out]

    def check(self, train: TrainConfig) -> None:
        check_batch_sizes(train, int(self._train_counts.min()), int(self._val_counts.min()), self.context_size)

    def batches_per_epoch(self, batch_size: int) -> int:
        return max(1, int(self._train_counts.min()) // batch_size)

    def _epoch_order(self, epoch: int) -> Tensor:
        """``(D, width)``: per training distribution an independent permutation of its training
        rows' positions (valid positions first), fixed by the seed and the epoch."""
        if self._epoch is None or self._epoch[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch + 1)
            keys = torch.rand(self._train_rows.shape, generator=gen)
            keys.masked_fill_(torch.arange(keys.shape[1]) >= self._train_counts.unsqueeze(1), 2.0)  # padding last
            self._epoch = (epoch, keys.argsort(dim=1))
        return self._epoch[1]

    def to(self, device: torch.device) -> DatasetFamily:
        """Keep the examples on ``device``."""
        self._x = {p: x.to(device) for p, x in self._x.items()}
        self._y = {p: None if y is None else y.to(device) for p, y in self._y.items()}
        return self

    def _fetch(self, part: str):
        x, y = self._x[part], self._y[part]

        def fetch(distribution: Tensor, index: Tensor) -> tuple[Tensor, Tensor | None]:
            index = index.to(x.device)
            return x[index], (None if y is None else y[index])
        return fetch

    def train_batch(self, epoch: int, step_in_epoch: int, batch_size: int, pool_size: int,
                    generator: torch.Generator) -> Batch:
        start = step_in_epoch * batch_size
        positions = self._epoch_order(epoch)[:, start : start + batch_size]  # (D, B)
        query = torch.gather(self._train_rows, 1, positions)  # (D, B)
        return sample_batch(self._fetch("train"), torch.arange(self.num_decoders), query, self._train_rows,
                            self.context_size, pool_size, generator, counts=self._train_counts)

    def _fixed_batch(self, part: str, rows: Tensor, counts: Tensor, num_examples: int, pool_size: int) -> Batch:
        gen = torch.Generator().manual_seed(self.seed + 7919)
        n = min(num_examples, int(counts.min()))
        query = torch.gather(rows, 1, sample_without_replacement(rows.shape[0], rows.shape[1], n, gen, counts))  # (D, n)
        return sample_batch(self._fetch(part), torch.arange(self.num_decoders), query, rows, self.context_size, pool_size,
                            gen, counts=counts)

    def validation_batch(self, num_examples: int, pool_size: int) -> Batch:
        return self._fixed_batch("train", self._val_rows, self._val_counts, num_examples, pool_size)

    def test_batch(self, num_examples: int, pool_size: int) -> Batch:
        rows, counts = _pad([torch.arange(self._size[self._part("test")][i]) + self._offset["test"][i] for i in self.trained])
        return self._fixed_batch("test", rows, counts, num_examples, pool_size)

    def distribution_batch(self, name: str, part: Part, num_examples: int | None, pool_size: int,
                           generator: torch.Generator) -> Batch:
        """Up to ``num_examples`` examples of one distribution's ``part`` (a uniform random subset,
        in order; ``None``: all), contexts from the whole part (a pool of at most ``pool_size`` of its examples)."""
        if name not in self.names:
            raise ValueError(f"name: {name!r} is not a distribution of this family; expected one of {self.names}")
        i = self.names.index(name)
        n, offset = self._size[self._part(part)][i], self._offset[part][i]
        index = torch.arange(n)
        if num_examples is not None and num_examples < n:
            index = torch.randperm(n, generator=generator)[:num_examples].sort().values
        decoder = torch.tensor([self.trained.index(i) if i in self.trained else HELD_OUT])
        return sample_batch(self._fetch(part), torch.tensor([i]), index[None] + offset, torch.arange(n) + offset,
                            self.context_size, min(pool_size, n), generator, decoder_index=decoder)

    def _part(self, part: str) -> str:
        if part not in ("train", "test"):
            raise ValueError(f"part: expected 'train' or 'test', got {part!r}")
        if part not in self._x:
            raise ValueError("part: this DatasetFamily has no test parts; pass test=[...] (one entry per distribution) "
                             "to evaluate on test data")
        return part

    def describe(self) -> dict[str, Any]:
        return {"distributions": self.distribution_names(), "held_out": self.held_out_names(),
                "event_shape": list(self._event_shape), "context_size": self.context_size,
                "sizes": {p: list(n) for p, n in self._size.items()}, "validation_fraction": self.validation_fraction,
                "seed": self.seed, "sha256": self._digest}

    def __repr__(self) -> str:
        return (f"DatasetFamily({len(self.names)} distributions of shape {self._event_shape}, "
                f"trained {self.distribution_names()}, held out {self.held_out_names()}, N={self.context_size})")


def _pad(ids: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Ragged row-id lists → padded ``(G, width)`` (padding 0) and counts ``(G,)``."""
    counts = torch.tensor([t.numel() for t in ids])
    rows = torch.zeros(len(ids), int(counts.max()), dtype=torch.long)
    for g, t in enumerate(ids):  # once, at construction: G rows
        rows[g, : t.numel()] = t
    return rows, counts
