"""The parametric families of the sufficient-statistics experiment (paper §4, Figs. 2–3).

Each family has a scalar parameter θ, reached from an unconstrained latent coordinate z by a
**link**: the identity where θ may be any real (Gaussian mean, log-normal log-mean), softplus
(θ = log(1 + eᶻ)) where it must be positive (exponential rate, Beta(α, α)'s α, Weibull
concentration, Laplace scale). A data point is 2-D; its coordinate d follows the family at
θ_d = link(z_d), so the latent z is 2-D (the paper's z), and a distribution of the experiment — one
true θ — draws both coordinates i.i.d. from the family at θ (z = (link⁻¹ θ, link⁻¹ θ)). An
observation x is a set of ``points`` such points; a context set D is ``context_size`` observations.

=============  ==========================  ========  ==========================================
family         θ                           link      fixed
=============  ==========================  ========  ==========================================
gaussian       mean                        identity  variance 0.1 (the 2020 code's scale was wrong)
lognormal      mean of log x               identity  variance of log x 0.1
exponential    rate                        softplus
beta           α of Beta(α, α)             softplus
weibull        concentration k             softplus  scale 1
laplace        scale b                     softplus  location 0
=============  ==========================  ========  ==========================================

:func:`log_likelihood` is log p(x | z) — a decoder without parameters; :func:`mle` the
maximum-likelihood θ of each coordinate from any set of points (closed form, or a monotone root
found by bisection for Beta and Weibull); :func:`exact_posterior` the exact posterior of θ_d under
the prior z_d ~ N(0, 1) (closed form for the Gaussian, an adaptive grid otherwise), the target of
the amortized training objective (reached exactly by a Gaussian q(z) where the posterior is
Gaussian: the Gaussian and log-normal families).

Samples are float32; a Beta draw that float32 would round to 0 or 1 is kept inside the open
interval (its log-density and the MLE's log(1 − x) stay finite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor
from torch.distributions import Beta, Distribution, Exponential, Laplace, LogNormal, Normal, Weibull

from metavae.evaluation.grid_posterior import PosteriorSummary, grid_posterior

__all__ = ["EXPFAM_FAMILIES", "ExpFamily", "GAUSSIAN_VARIANCE", "LOGNORMAL_VARIANCE", "exact_posterior", "link",
           "inverse_link", "log_likelihood", "mle", "sample"]

GAUSSIAN_VARIANCE = 0.1
LOGNORMAL_VARIANCE = 0.1


@dataclass(frozen=True)
class ExpFamily:
    """A family: its name, link, ``torch`` distribution at θ, ``scipy.stats`` distribution at θ (for
    sampling from a seeded numpy generator) and the interval of θ-values the references consider."""

    name: str
    link: str  # "identity" or "softplus"
    torch_distribution: Callable[[Tensor], Distribution]
    scipy_distribution: Callable[[float], object]


EXPFAM_FAMILIES: dict[str, ExpFamily] = {
    "gaussian": ExpFamily("gaussian", "identity", lambda t: Normal(t, math.sqrt(GAUSSIAN_VARIANCE), validate_args=False),
                          lambda t: stats.norm(t, math.sqrt(GAUSSIAN_VARIANCE))),
    "lognormal": ExpFamily("lognormal", "identity", lambda t: LogNormal(t, math.sqrt(LOGNORMAL_VARIANCE), validate_args=False),
                           lambda t: stats.lognorm(math.sqrt(LOGNORMAL_VARIANCE), scale=math.exp(t))),
    "exponential": ExpFamily("exponential", "softplus", lambda t: Exponential(t, validate_args=False),
                             lambda t: stats.expon(scale=1 / t)),
    "beta": ExpFamily("beta", "softplus", lambda t: Beta(t, t, validate_args=False), lambda t: stats.beta(t, t)),
    "weibull": ExpFamily("weibull", "softplus", lambda t: Weibull(torch.ones_like(t), t, validate_args=False),
                         lambda t: stats.weibull_min(t)),
    "laplace": ExpFamily("laplace", "softplus", lambda t: Laplace(torch.zeros_like(t), t, validate_args=False),
                         lambda t: stats.laplace(0, t)),
}


def _family(name: str) -> ExpFamily:
    if name not in EXPFAM_FAMILIES:
        raise ValueError(f"family: unknown exponential family {name!r}; choose from {', '.join(EXPFAM_FAMILIES)}")
    return EXPFAM_FAMILIES[name]


def link(family: str, z: Tensor) -> Tensor:
    """θ = link(z): the identity, or softplus for positive parameters."""
    return z if _family(family).link == "identity" else torch.nn.functional.softplus(z)


def inverse_link(family: str, theta: Tensor) -> Tensor:
    """z = link⁻¹(θ); softplus⁻¹(θ) = θ + log(1 − e^{−θ}), for θ > 0."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    if _family(family).link == "identity":
        return theta
    if not bool((theta > 0).all()):
        raise ValueError(f"theta: a {family} parameter must be positive, got {theta.min().item():g}")
    return theta + torch.log(-torch.expm1(-theta))


def log_likelihood(family: str, x: Tensor, z: Tensor) -> Tensor:
    """log p(x | z) = Σ_points Σ_d log f(x_{·d}; link(z_d)) for observations ``x: (…, P, 2)`` and latents
    ``z: (…, 2)`` broadcasting against ``x``'s leading axes (e.g. ``(K, B, 2)`` with ``(B, P, 2)``)."""
    theta = link(family, z).unsqueeze(-2)  # (…, 1, 2)
    return _family(family).torch_distribution(theta).log_prob(x).sum((-2, -1))


def sample(family: str, theta: Sequence[float], observations: int, points: int, seed: int) -> Tensor:
    """``(len(theta), observations, points, 2)`` float32 points, both coordinates drawn i.i.d. from the
    family at θ (``scipy.stats`` with a numpy generator seeded by ``seed``)."""
    rng = np.random.default_rng(seed)
    fam = _family(family)
    out = np.stack([fam.scipy_distribution(float(t)).rvs(size=(observations, points, 2), random_state=rng) for t in theta])
    x = torch.as_tensor(out, dtype=torch.float32)
    if family == "beta":  # float32 rounds draws within 6e-8 of 0 or 1 onto the boundary, where log x or log(1 − x) is −inf
        x = x.clamp(torch.finfo(torch.float32).tiny, 1 - torch.finfo(torch.float32).eps / 2)
    return x


def _bisect(decreasing: Callable[[Tensor], Tensor], shape: torch.Size, low: float = -12.0, high: float = 12.0,
            iterations: int = 100) -> Tensor:
    """The root in log-space: ``exp(s)`` with ``decreasing(exp(s)) = 0``, by bisection on s ∈ [low, high]."""
    lo = torch.full(shape, low, dtype=torch.float64)
    hi = torch.full(shape, high, dtype=torch.float64)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        positive = decreasing(torch.exp(mid)) > 0
        lo, hi = torch.where(positive, mid, lo), torch.where(positive, hi, mid)
    return torch.exp((lo + hi) / 2)


def mle(family: str, x: Tensor, dim: int = -2) -> Tensor:
    """The maximum-likelihood θ from the points of ``x`` along ``dim`` (default: the points of an
    observation ``(…, P, 2)`` → ``(…, 2)``, one estimate per coordinate), in float64.

    gaussian: mean; lognormal: mean of log x; exponential: 1 / mean; laplace: mean |x|; beta(α, α):
    the root of 2ψ(2α) − 2ψ(α) + mean log(x(1 − x)) (decreasing in α); weibull (scale 1): the root of
    1/k + mean log x − mean(xᵏ log x) (decreasing in k).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    _family(family)
    if family == "gaussian":
        return x.mean(dim)
    if family == "lognormal":
        return x.log().mean(dim)
    if family == "exponential":
        return 1 / x.mean(dim)
    if family == "laplace":
        return x.abs().mean(dim)
    if family == "beta":
        s = (x.log() + torch.log1p(-x)).mean(dim)
        return _bisect(lambda a: 2 * torch.digamma(2 * a) - 2 * torch.digamma(a) + s, s.shape)
    log_x = x.log()  # weibull
    mean_log = log_x.mean(dim)
    return _bisect(lambda k: 1 / k + mean_log - (torch.exp(k.unsqueeze(dim) * log_x) * log_x).mean(dim), mean_log.shape)


def exact_posterior(family: str, x: Tensor, levels: Sequence[float] = (0.5, 0.9), grid_size: int = 513) -> PosteriorSummary:
    """The exact posterior of θ_d = link(z_d) given the points of ``x: (M, P, 2)`` (one coordinate d at a
    time: they are independent given z), under the prior z_d ~ N(0, 1); summaries ``(M, 2)``.

    Gaussian: conjugate, N(z; v·Σx/σ², v) with v = 1 / (1 + P/σ²) (mean, variance and intervals in
    closed form). Others: the adaptive grid of :mod:`metavae.evaluation.grid_posterior` over
    z ∈ [−30, 30], summarised as θ = link(z) (an increasing map, so intervals carry over).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    m, p, d = x.shape
    if family == "gaussian":
        var = 1 / (1 + p / GAUSSIAN_VARIANCE)
        mean = var * x.sum(1) / GAUSSIAN_VARIANCE
        sd = math.sqrt(var)
        intervals = {lv: (mean + sd * stats.norm.ppf((1 - lv) / 2), mean + sd * stats.norm.ppf((1 + lv) / 2)) for lv in levels}
        return PosteriorSummary(mean, torch.full_like(mean, var), intervals)
    columns = x.permute(0, 2, 1).reshape(m * d, p)  # one row per (observation, coordinate)
    fam = _family(family)
    chunk = max(1, 2**24 // (grid_size * p))  # rows per pass: a (rows, grid, points) float64 block of ≤ 128 MiB
    parts = []
    for start in range(0, m * d, chunk):
        rows = columns[start : start + chunk]

        def log_density(z: Tensor, rows: Tensor = rows) -> Tensor:  # z: (R, J) → log prior + log likelihood
            dist = fam.torch_distribution(link(family, z).unsqueeze(-1))  # batch (R, J, 1)
            return -0.5 * z * z + dist.log_prob(rows.unsqueeze(1)).sum(-1)

        parts.append(grid_posterior(log_density, torch.full((rows.shape[0],), -30.0, dtype=torch.float64), 30.0, levels,
                                    transform=lambda z: link(family, z), grid_size=grid_size))
    shape = (m, d)
    return PosteriorSummary(torch.cat([s.mean for s in parts]).view(shape), torch.cat([s.variance for s in parts]).view(shape),
                            {lv: (torch.cat([s.intervals[lv][0] for s in parts]).view(shape),
                                  torch.cat([s.intervals[lv][1] for s in parts]).view(shape)) for lv in levels})
