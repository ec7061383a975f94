"""Context sets as shared elements plus an index, and their vectorised sampling.

A batch of B context sets of size N is stored as ``elements: (P, *event)`` and
``index: (B, N)`` (rows of ``elements``). Dense per-example sets are the special case
``P = B·N``, ``index = arange(B·N).view(B, N)``. Sharing lets a set encoder embed each
element once however many sets it appears in — the *context pool* used for fast training
and evaluation: draw a pool of P images of a distribution once per step, embed it once, and
give each example a uniformly random N-subset of it. Marginally each example's context is
still a uniform random N-subset of the distribution's images, so the expected objective is
unchanged (contexts of different examples become correlated, which only affects variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Context", "as_context", "sample_without_replacement", "subset_index", "pool_rows"]


@dataclass(frozen=True)
class Context:
    """Context sets ``elements: (P, *event)`` indexed by ``index: (B, N)``."""

    elements: Tensor
    index: Tensor

    @classmethod
    def dense(cls, sets: Tensor) -> "Context":
        """From dense sets ``(B, N, *event)``."""
        b, n = sets.shape[:2]
        index = torch.arange(b * n, device=sets.device).view(b, n)
        return cls(sets.reshape(b * n, *sets.shape[2:]), index)

    @property
    def batch_size(self) -> int:
        return int(self.index.shape[0])

    @property
    def set_size(self) -> int:
        return int(self.index.shape[1])

    def to(self, device: torch.device | str) -> "Context":
        return Context(self.elements.to(device), self.index.to(device))

    def select(self, rows: Tensor) -> "Context":
        """The context sets of the examples ``rows`` (shares the elements)."""
        return Context(self.elements, self.index[rows])


def as_context(context: Tensor | Context) -> Context:
    """Accept dense ``(B, N, *event)`` sets or a :class:`Context`."""
    return context if isinstance(context, Context) else Context.dense(context)


def sample_without_replacement(
    num_rows: int, population: int, k: int, generator: torch.Generator | None = None, counts: Tensor | None = None
) -> Tensor:
    """``(num_rows, k)`` indices; row r a uniform random k-subset of ``range(counts[r])``.

    ``counts: (num_rows,)`` gives ragged populations (default: ``population`` for every row).
    One batched ``topk`` over uniform keys (no per-row permutations); positions at or beyond a
    row's count get key −1, below every valid key, so they are never among the k largest.
    """
    smallest = population if counts is None else int(counts.min())
    if k > smallest:
        raise ValueError(f"cannot draw {k} distinct items from {smallest}")
    keys = torch.rand(num_rows, population, generator=generator)
    if counts is not None:
        keys.masked_fill_(torch.arange(population) >= counts.unsqueeze(1), -1.0)
    return keys.topk(k, dim=1, sorted=False).indices


def subset_index(
    num_groups: int, per_group: int, pool_size: int, set_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """Context index into ``num_groups`` stacked pools of ``pool_size`` elements.

    Returns ``(num_groups·per_group, set_size)``: example j of group g gets a uniform random
    ``set_size``-subset of rows ``g·pool_size … (g+1)·pool_size − 1``. With ``pool_size = 0``
    the sets are dense and disjoint: ``per_group·set_size`` rows per group, each used once.
    """
    if pool_size == 0:
        return torch.arange(num_groups * per_group * set_size).view(num_groups * per_group, set_size)
    local = sample_without_replacement(num_groups * per_group, pool_size, set_size, generator)
    offset = torch.arange(num_groups).repeat_interleave(per_group).unsqueeze(1) * pool_size
    return local + offset


def pool_rows(pool_size: int, per_group: int, set_size: int) -> int:
    """Elements per group that :func:`subset_index` expects (``per_group·set_size`` when dense)."""
    return pool_size if pool_size > 0 else per_group * set_size
