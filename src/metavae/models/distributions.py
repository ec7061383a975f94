"""Distributions beyond ``torch.distributions`` that the models need."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, constraints

__all__ = ["DiagonalNormalMixture", "LogitNormalMixture"]


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


class LogitNormalMixture(Distribution):
    """A mixture of M logit-normal distributions on the interval ``(low, high)``.

    With ``y = logit((v − low) / (high − low))`` the density is a Gaussian mixture in y carried
    over by the change of variables::

        p(v) = Σ_m π_m N(y; μ_m, σ_m²) · |dy/dv|,   dy/dv = (high − low) / ((v − low)(high − v)),

    so the support is exactly ``(low, high)`` whatever the parameters, the CDF is
    ``Σ_m π_m Φ((y − μ_m)/σ_m)`` and quantiles are exact (``icdf``, by bisection in y on that
    monotone CDF; a single component has the closed form ``low + (high − low)·σ(μ + σ Φ⁻¹(q))``).
    The mean and variance have no closed form: they are computed by Gauss–Hermite quadrature
    with ``quadrature_points`` nodes per component (the integrand σ(μ + σ z) is smooth, so 64
    nodes are exact to float32 precision for σ up to ~10).

    Batch shape: that of ``logits[..., 0]``; event shape ``()``.

    Args:
        logits: ``(…, M)`` unnormalised mixture log-weights.
        loc: ``(…, M)`` component means in y.
        scale: ``(…, M)`` component standard deviations in y (positive).
        low: the support's lower end (``low < high``).
        high: the support's upper end.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, logits: Tensor, loc: Tensor, scale: Tensor, low: float, high: float,
                 quadrature_points: int = 64) -> None:
        if not low < high:
            raise ValueError(f"LogitNormalMixture: expected low < high, got {low} and {high}")
        self.logits, self.loc, self.scale = torch.broadcast_tensors(logits, loc, scale)
        self.low, self.high = float(low), float(high)
        self.quadrature_points = quadrature_points
        super().__init__(batch_shape=self.loc.shape[:-1], validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.interval(self.low, self.high)

    @property
    def log_weights(self) -> Tensor:
        """``(…, M)`` normalised log mixture weights."""
        return torch.log_softmax(self.logits, dim=-1)

    def _logit(self, value: Tensor) -> Tensor:
        """y = logit((v − low)/(high − low)), computed as log(v − low) − log(high − v)."""
        return torch.log(value - self.low) - torch.log(self.high - value)

    def log_prob(self, value: Tensor) -> Tensor:
        """``log p(v)``; ``value`` broadcasts against the batch shape. ``−inf`` outside ``(low, high)``."""
        inside = (value > self.low) & (value < self.high)
        v = torch.where(inside, value, torch.full_like(value, 0.5 * (self.low + self.high)))
        y = self._logit(v)
        log_jacobian = math.log(self.high - self.low) - torch.log(v - self.low) - torch.log(self.high - v)  # log |dy/dv|
        z = (y.unsqueeze(-1) - self.loc) / self.scale
        log_normal = -0.5 * z.pow(2) - self.scale.log() - 0.5 * math.log(2 * math.pi)
        out = torch.logsumexp(self.log_weights + log_normal, dim=-1) + log_jacobian
        return torch.where(inside, out, torch.full_like(out, -math.inf))

    def cdf(self, value: Tensor) -> Tensor:
        """``P(V ≤ v) = Σ_m π_m Φ((y − μ_m)/σ_m)``; 0 below ``low``, 1 above ``high``."""
        v = value.clamp(self.low, self.high)
        y = self._logit(v)  # ±inf at the ends: Φ gives 0 and 1
        z = (y.unsqueeze(-1) - self.loc) / self.scale
        return (self.log_weights.exp() * torch.special.ndtr(z)).sum(-1)

    def icdf(self, value: Tensor, iterations: int = 60) -> Tensor:
        """The ``value``-quantile (``value`` in (0, 1), broadcasting against the batch shape)."""
        q = torch.as_tensor(value, dtype=self.loc.dtype, device=self.loc.device)
        shape = torch.broadcast_shapes(q.shape, self.batch_shape)
        lo = (self.loc - 12 * self.scale).amin(-1).expand(shape).clone()
        hi = (self.loc + 12 * self.scale).amax(-1).expand(shape).clone()
        q = q.expand(shape)
        w = self.log_weights.exp()
        for _ in range(iterations):  # bisection in y on the monotone mixture CDF
            mid = 0.5 * (lo + hi)
            below = (w * torch.special.ndtr((mid.unsqueeze(-1) - self.loc) / self.scale)).sum(-1) < q
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return self.low + (self.high - self.low) * torch.sigmoid(0.5 * (lo + hi))

    def _moment(self, power: int) -> Tensor:
        nodes, weights = np.polynomial.hermite_e.hermegauss(self.quadrature_points)  # ∫ f(z) φ(z) dz ≈ Σ w f(z) / √(2π)
        z = torch.as_tensor(nodes, dtype=self.loc.dtype, device=self.loc.device)
        h = torch.as_tensor(weights / weights.sum(), dtype=self.loc.dtype, device=self.loc.device)
        v = self.low + (self.high - self.low) * torch.sigmoid(self.loc.unsqueeze(-1) + self.scale.unsqueeze(-1) * z)  # (…, M, J)
        per_component = (v.pow(power) * h).sum(-1)  # (…, M)
        return (self.log_weights.exp() * per_component).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self._moment(1)

    @property
    def variance(self) -> Tensor:
        return (self._moment(2) - self._moment(1).pow(2)).clamp_min(0.0)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.batch_shape
            component = Categorical(logits=self.logits).sample(torch.Size(sample_shape))  # (*sample, *batch)
            loc = torch.gather(self.loc.expand(*shape, -1), -1, component.unsqueeze(-1)).squeeze(-1)
            scale = torch.gather(self.scale.expand(*shape, -1), -1, component.unsqueeze(-1)).squeeze(-1)
            y = loc + scale * torch.randn(shape, dtype=loc.dtype, device=loc.device)
            return self.low + (self.high - self.low) * torch.sigmoid(y)
