"""Distributions beyond ``torch.distributions`` that the models need."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

__all__ = ["DiagonalNormalMixture"]


class DiagonalNormalMixture(MixtureSameFamily):
    """A mixture of M diagonal Gaussians in D dimensions, ``MixtureSameFamily`` with a fast ``log_prob``.

    log p(c) = logsumexp_m [log π_m + Σ_d log N(c_d; μ_md, σ_md)], where the Gaussian terms are
    Σ_d log N(c_d; μ_md, σ_md) = −½ (c²·σ⁻²_m − 2 c·μ_mσ⁻²_m + μ_m²·σ⁻²_m) − Σ_d log σ_md − (D/2) log 2π,
    i.e. two ``(…, D) @ (D, M)`` matmuls instead of a ``(…, M, D)`` broadcast. The expansion
    cancels (c² − 2cμ + μ²), so it is evaluated in float64 whatever the input precision (float32 on
    MPS, which has no float64).
    Sampling and all other methods are ``MixtureSameFamily``'s.

    Args:
        logits: ``(M,)`` unnormalised mixture log-weights.
        loc: ``(M, D)`` component means.
        scale: ``(M, D)`` component standard deviations.
    """

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor) -> None:
        super().__init__(Categorical(logits=logits), Independent(Normal(loc, scale), 1), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        """``value: (…, D)`` → ``(…,)``."""
        comp = self.component_distribution.base_dist
        dtype = value.dtype
        wide = torch.float32 if value.device.type == "mps" else torch.float64  # MPS has no float64
        value, loc, scale = value.to(wide), comp.loc.to(wide), comp.scale.to(wide)  # loc, scale: (M, D)
        precision = scale.pow(-2)
        quad = value.pow(2) @ precision.T - 2 * value @ (loc * precision).T + (loc.pow(2) * precision).sum(-1)  # (…, M)
        log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # (M,)
        log_mix = torch.log_softmax(self.mixture_distribution.logits.to(wide), dim=-1)  # (M,)
        return torch.logsumexp(log_mix - 0.5 * quad.clamp_min(0.0) - log_norm, dim=-1).to(dtype)
