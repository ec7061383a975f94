"""The one ``Task`` protocol: what a family of distributions gives the trainer and the evaluation.

A *task* is a family of related distributions p_1, …, p_M. Some of them are *training*
distributions: each has its own decoder (index ``0 … num_decoders − 1``, in the order of
:meth:`Task.distribution_names`) and supplies training and validation batches. The others are
*held out*: never trained on, they are represented at test time by context sets alone and
evaluated (e.g. by the linear probe). Every distribution may have a ``"train"`` and a ``"test"``
part (disjoint sets of its examples).

Shapes (one data point has shape ``event_shape``, e.g. ``(1, 28, 28)``):

- :class:`Batch`: ``x: (B, *event)`` queries; ``context``: a
  :class:`~metavae.data.context.Context` with ``elements: (P, *event)`` and ``index: (B, N)``
  (query b's context set is ``elements[index[b]]``, N = the context size), each set drawn from
  the *same distribution and part* as its query; ``decoder_index: (B,)`` the decoder of the
  query's distribution (held-out distributions have none: their batches carry ``-1``);
  ``labels: (B,)`` or ``None``.

One :class:`~metavae.training.Trainer` trains any task; transformed images
(:class:`~metavae.data.image_task.ImageFamilyTask`) and user-given data sets
(:class:`~metavae.data.dataset_family.DatasetFamily`) are two implementations. Tasks are checked
against this protocol by a shared contract test (``tests/test_task_contract.py``) that every new
task is added to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from metavae.data.context import Context, pool_rows, sample_without_replacement, subset_index
from metavae.errors import ConfigError

if TYPE_CHECKING:
    from metavae.config import TrainConfig

Part = Literal["train", "test"]

__all__ = ["Batch", "Part", "Task", "Fetch", "sample_batch", "check_batch_sizes", "HELD_OUT"]

#: ``decoder_index`` of the queries of a held-out distribution (it has no decoder)
HELD_OUT = -1


@dataclass(frozen=True)
class Batch:
    """Queries ``x: (B, *event)``, their context sets (B sets of N), ``decoder_index: (B,)`` and
    optional ``labels: (B,)``."""

    x: Tensor
    context: Context
    decoder_index: Tensor
    labels: Tensor | None = None

    def shard(self, rows: slice) -> Batch:
        """Queries ``rows`` of this batch with their context sets, keeping only the context elements
        those sets use (re-indexed, in their original order)."""
        used, inverse = torch.unique(self.context.index[rows], return_inverse=True)  # (P',), (b, N)
        return Batch(self.x[rows], Context(self.context.elements[used], inverse), self.decoder_index[rows],
                     None if self.labels is None else self.labels[rows])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device`` (tensors already there are not copied)."""
        return Batch(self.x.to(device), self.context.to(device), self.decoder_index.to(device),
                     None if self.labels is None else self.labels.to(device))


@runtime_checkable
class Task(Protocol):
    """A family of distributions as the trainer and evaluation see it.

    Implementations: :class:`~metavae.data.image_task.ImageFamilyTask`,
    :class:`~metavae.data.dataset_family.DatasetFamily`. Randomness comes only from the
    ``generator`` passed in, or from fixed seeds (validation, test), so runs are reproducible
    and resumable.
    """

    @property
    def num_decoders(self) -> int:
        """Number of training distributions (= decoders of a per-distribution model)."""
        ...

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point, e.g. ``(1, 28, 28)``."""
        ...

    @property
    def context_size(self) -> int:
        """N, the size of every context set."""
        ...

    def distribution_names(self) -> list[str]:
        """Names of the training distributions, in decoder order."""
        ...

    def held_out_names(self) -> list[str]:
        """Names of the held-out distributions (evaluated, never trained on)."""
        ...

    def check(self, train: TrainConfig) -> None:
        """Raise :class:`~metavae.errors.ConfigError` naming the key if ``train``'s batch and
        pool sizes cannot be served by this data; called before any training."""
        ...

    def batches_per_epoch(self, batch_size: int) -> int:
        """Training steps in one epoch when each step draws ``batch_size`` queries per training distribution."""
        ...

    def train_batch(self, epoch: int, step_in_epoch: int, batch_size: int, pool_size: int,
                    generator: torch.Generator) -> Batch:
        """Step ``step_in_epoch`` of ``epoch``: ``batch_size`` queries from *every* training
        distribution (``B = num_decoders · batch_size``), contexts from each query's distribution
        (``pool_size`` > 0: a pool of that many examples per distribution, embedded once, each set a
        uniform random N-subset of it; 0: disjoint per-example sets). Queries never include the
        validation examples."""
        ...

    def validation_batch(self, num_examples: int, pool_size: int) -> Batch:
        """A fixed batch (the same at every call) of up to ``num_examples`` validation queries per
        training distribution, contexts from the validation examples; used for model selection."""
        ...

    def test_batch(self, num_examples: int, pool_size: int) -> Batch:
        """A fixed batch of up to ``num_examples`` test-part queries per training distribution,
        contexts from the test part (the test log-likelihood)."""
        ...

    def distribution_batch(self, name: str, part: Part, num_examples: int | None, pool_size: int,
                           generator: torch.Generator) -> Batch:
        """Up to ``num_examples`` (``None``: all) queries of one distribution's ``part`` — training
        or held out — with labels if the task has them, contexts from the same distribution and
        part; used to embed a distribution (the probe)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The family as plain data (its settings and a fingerprint of its data): a run started
        from Python records it, and a resumed run must match it."""
        ...

    def to(self, device: torch.device) -> Task:
        """Keep the examples on ``device``: fetching and transforming examples then happens there
        (which examples, i.e. the random indices, are still drawn on the CPU from the seeded
        generators, so a run draws the same batches on every device). Returns the task."""
        ...


#: ``fetch(distribution (n,), example (n,)) → (x (n, *event), labels (n,) or None)``
Fetch = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor | None]"]


def sample_batch(
    fetch: Fetch,
    distributions: Tensor,
    query: Tensor,
    candidates: Tensor,
    set_size: int,
    pool_size: int,
    generator: torch.Generator,
    decoder_index: Tensor | None = None,
    counts: Tensor | None = None,
) -> Batch:
    """One batch over G distributions, B queries each, every context set from its query's distribution.

    Args:
        fetch: reads examples: ``(distribution (n,), example (n,))`` → ``(x (n, *event), labels or None)``.
        distributions: ``(G,)`` ids of the distributions (passed to ``fetch``).
        query: ``(G, B)`` example ids of the queries.
        candidates: ``(G, n_c)`` example ids that each distribution's contexts are drawn from (a row
            may be padded beyond ``counts[g]``), or ``(n_c,)`` shared by all G distributions.
        set_size: N, the context size.
        pool_size: P > 0 → a pool of P candidates per distribution, each query's set a uniform
            N-subset of it; 0 → disjoint per-example sets (B·N distinct candidates per distribution).
        decoder_index: ``(G,)`` decoder of each distribution (default ``arange(G)``).
        counts: ``(G,)`` valid candidates per row (default: all ``n_c``).

    Returns:
        ``Batch`` with ``x: (G·B, *event)`` grouped by distribution, ``context.elements:
        (G·rows, *event)``, ``context.index: (G·B, N)``, ``decoder_index: (G·B,)``.

    Contexts are drawn independently of the queries, so a query can (with probability about
    N / n_c) appear in its own context set. All randomness comes from ``generator``.
    """
    g, b = query.shape
    if candidates.dim() == 1:
        candidates = candidates.expand(g, -1)
    rows = pool_rows(pool_size, b, set_size)
    available = candidates.shape[1] if counts is None else int(counts.min())
    if rows > available:
        raise ConfigError(f"context sampling needs {rows} distinct examples per distribution but only {available} are "
                         "available: lower the pool size or the batch size")
    pick = sample_without_replacement(g, candidates.shape[1], rows, generator, counts)  # (G, rows)
    pool = torch.gather(candidates, 1, pick)  # (G, rows)
    index = subset_index(g, b, pool_size, set_size, generator)  # (G·B, N)
    x, labels = fetch(distributions.repeat_interleave(b), query.reshape(-1))  # (G·B, *event)
    elements, _ = fetch(distributions.repeat_interleave(rows), pool.reshape(-1))  # (G·rows, *event)
    dec = torch.arange(g) if decoder_index is None else decoder_index
    return Batch(x, Context(elements, index), dec.repeat_interleave(b), labels)


def check_batch_sizes(train: TrainConfig, n_train: int, n_val: int, context_size: int) -> None:
    """Refuse (:class:`~metavae.errors.ConfigError`, naming the key) batch and pool sizes that
    ``n_train`` training and ``n_val`` validation examples per distribution cannot serve."""
    for key, pool in (("train.context_pool_size", train.context_pool_size), ("train.val_pool_size", train.val_pool_size)):
        if 0 < pool < context_size:
            raise ConfigError(f"config key '{key}': a context pool must hold at least the context size {context_size} "
                              f"(got {pool}); 0 means per-example contexts")
    if train.batch_size > n_train:
        raise ConfigError(f"config key 'train.batch_size': {train.batch_size} exceeds the {n_train} "
                          "training examples of each distribution; choose a smaller value")
    rows = pool_rows(train.context_pool_size, train.batch_size, context_size)
    if rows > n_train:
        key = "train.context_pool_size" if train.context_pool_size else "train.batch_size"
        raise ConfigError(f"config key '{key}': the training contexts need {rows} distinct examples per distribution "
                          f"but there are {n_train}; choose a smaller value")
    rows = pool_rows(train.val_pool_size, min(train.val_examples, n_val), context_size)
    if rows > n_val:
        key = "train.val_pool_size" if train.val_pool_size else "train.val_examples"
        raise ConfigError(f"config key '{key}': the validation contexts need {rows} distinct examples per distribution "
                          f"but there are {n_val} validation examples; choose a smaller value")
