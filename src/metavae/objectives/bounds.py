"""Variational bounds written once, as functions of a model's log-weights.

For latents ``z_k ~ q(z | x, D)``, ``k = 1..K``, the log-weights are
``log w_k = log p(x, z_k) − log q(z_k | x, D)`` with shape ``(K, B)``. Then

- ELBO  = (1/K) Σ_k log w_k, an unbiased estimate of E_q[log p(x, z) − log q(z | x, D)];
- IWAE  = log (1/K) Σ_k w_k = logsumexp_k(log w_k) − log K (Burda et al., 2016), a stochastic
  lower bound on log p(x) that is ≥ the ELBO in expectation, tightens monotonically in K and
  converges to log p(x) as K → ∞; with K = 1 it equals the ELBO sample.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["HasLogWeights", "elbo", "iwae", "log_likelihood"]


class HasLogWeights(Protocol):
    def log_weights(self, x: Tensor, context: Any, num_samples: int = 1, **kwargs: Any) -> Tensor: ...


def elbo(log_w: Tensor) -> Tensor:
    """``(K, B)`` log-weights → ``(B,)`` Monte Carlo ELBO."""
    return log_w.mean(0)


def iwae(log_w: Tensor) -> Tensor:
    """``(K, B)`` log-weights → ``(B,)`` importance-weighted bound ``logsumexp − log K``."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def log_likelihood(
    model: HasLogWeights,
    x: Tensor,
    context: Any,
    num_importance_samples: int,
    samples_per_chunk: int | None = None,
    **kwargs: Any,
) -> Tensor:
    """IWAE estimate of the model's ``log p(x)`` with ``num_importance_samples`` samples, ``(B,)``.

    The context set enters only through the proposal q, so it changes the estimate's variance,
    never the quantity estimated.

    Samples are drawn ``samples_per_chunk`` at a time (to bound memory) and combined exactly:
    ``logsumexp`` over all chunks' log-weights. The context size is a property of ``context``
    and is unrelated to ``num_importance_samples``.
    """
    with torch.no_grad():
        k = num_importance_samples
        chunk = samples_per_chunk or k
        parts = []
        for start in range(0, k, chunk):
            parts.append(torch.logsumexp(model.log_weights(x, context, min(chunk, k - start), **kwargs), dim=0))
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)
