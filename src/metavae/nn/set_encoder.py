"""Set encoders: a per-element network followed by a permutation-invariant pooling."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from metavae.data.context import Context, as_context

__all__ = ["SetEncoder"]


Pooling = Literal["mean", "max", "sum"]


class SetEncoder(nn.Module):
    """DeepSets summary ``h(D) = pool_{x ∈ D} φ(x)`` (Zaheer et al., 2017).

    With ``pooling="mean"`` (the paper's choice, and the default) the summary is the mean over
    the *set axis*: it does not depend on the batch the set sits in, on the order of the set's
    elements, or (in expectation) on the set size. Each distinct element of a
    :class:`~metavae.data.context.Context` is embedded once, however many sets share it.

    Args:
        element_net: φ, mapping ``(P, *event)`` to ``(P, summary_dim)``.
        pooling: ``"mean"``, ``"max"`` or ``"sum"`` over the set axis.
    """

    def __init__(self, element_net: nn.Module, pooling: Pooling = "mean") -> None:
        super().__init__()
        self.element_net = element_net
        self.pooling = pooling

    def forward(self, context: Tensor | Context, *more: Tensor) -> Tensor:
        """Context ``(B, N, *event)`` (or a :class:`Context`) → summary ``(B, summary_dim)``.

        ``more``: further elements ``(B, *event)`` each, the i-th joining set i (e.g. the query
        itself, for a set D ∪ {x}); every group of elements is embedded in its own call, so a
        network with batch statistics (batch norm in training) never mixes a set's context with
        the queries.
        """
        ctx = as_context(context)
        emb = self.element_net(ctx.elements)  # (P, S)
        sets = emb[ctx.index]  # (B, N, S)
        if more:
            sets = torch.cat([sets, *(self.element_net(m).unsqueeze(1) for m in more)], dim=1)  # (B, N + len(more), S)
        if self.pooling == "mean":
            return sets.mean(dim=1)
        if self.pooling == "sum":
            return sets.sum(dim=1)
        return sets.amax(dim=1)
