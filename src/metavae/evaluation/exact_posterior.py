"""The exact posterior of the friction coefficient on the inclined plane: the floor for every estimator.

For one measurement on a plane (L, A) under the simulator of :mod:`metavae.data.physics`, with
prior μ ~ U(μ_lo, μ_hi) and noise σ:

- the box slid and its time was measured as t: p(μ | t) ∝ N(t; √(2L / a(μ)), σ²) for μ < tan A
  (where a(μ) > 0) and 0 for μ ≥ tan A (the box would not have slid);
- the box did not slide: p(μ | not slid) ∝ 1 on [max(tan A, μ_lo), μ_hi], i.e. uniform there.

The density is evaluated on a uniform grid per observation, spanning where the posterior has
mass (found on a coarse grid over the prior first), and normalised with the trapezoid rule (the
one-dimensional integral is the only approximation; its error shrinks with the grid). From it: the posterior mean (the Bayes-optimal estimate under
squared error, whose MSE no estimator can beat), the variance, and central credible intervals
from the cumulative distribution (linear interpolation between grid points). Vectorised over
observations, ``chunk`` at a time to bound memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from metavae.data.physics import GRAVITY, InclinedPlane, descent_time
from metavae.evaluation.grid_posterior import PosteriorSummary, adaptive_window, normalised, summarise

__all__ = ["PosteriorSummary", "exact_posterior", "posterior_density"]


def _log_likelihood(mu: Tensor, time: Tensor, slid: Tensor, length: Tensor, angle: Tensor, simulator: InclinedPlane) -> Tensor:
    """log p(observation | μ) up to a constant, for ``mu: (M, J)`` and ``(M,)`` observations; −inf where impossible."""
    rad = angle[:, None] * (math.pi / 180.0)
    a = GRAVITY * (torch.sin(rad) - torch.cos(rad) * mu)  # (M, J) acceleration
    slides = a > 0
    if simulator.method == "closed_form":
        expected = torch.sqrt((2 * length[:, None]) / a.clamp_min(1e-300))
    else:
        expected = descent_time(length[:, None], angle[:, None], mu, simulator.method, simulator.dt)
    z = (time[:, None] - expected).div_(simulator.noise)
    log_lik = z.mul_(z).mul_(-0.5)  # the box slid: Gaussian in t
    impossible = torch.where(slid[:, None], ~slides, slides)  # slid but μ ≥ tan A, or stopped but μ < tan A
    log_lik = torch.where(slid[:, None], log_lik, torch.zeros_like(log_lik))  # it did not slide: flat on μ ≥ tan A
    return log_lik.masked_fill_(impossible, -math.inf)


def posterior_density(time: Tensor, slid: Tensor, length: Tensor, angle: Tensor, simulator: InclinedPlane = InclinedPlane(),
                      grid_size: int = 513, coarse_size: int = 257) -> tuple[Tensor, Tensor]:
    """``(grid (M, J), density (M, J))``: p(μ | observation) on a uniform grid per observation, each row
    integrating to 1 (trapezoid rule).

    Arguments are ``(M,)`` tensors: measured ``time`` (ignored where not ``slid``), ``slid``, the
    plane's ``length`` and ``angle`` (degrees); the descent time uses the simulator's method.

    Two passes, because a posterior can be far narrower than the prior (σ_μ ≈ 3·10⁻⁵ for long,
    steep planes): a coarse grid of ``coarse_size`` points over the prior finds where the density
    exceeds e⁻⁴⁰ of its maximum; a second grid of ``grid_size`` points spans that region, widened
    by one coarse step on each side (so a peak between two coarse points is inside it).
    """
    time, length, angle = (torch.as_tensor(v, dtype=torch.float64) for v in (time, length, angle))
    slid = torch.as_tensor(slid, dtype=torch.bool)
    def log_lik(mu: Tensor) -> Tensor:
        return _log_likelihood(mu, time, slid, length, angle, simulator)

    lo, hi = adaptive_window(log_lik, simulator.mu_low, simulator.mu_high, time.shape[0], coarse_size)
    # a box that did not slide: the posterior is uniform on [tan A, μ_hi]; its grid starts exactly at the
    # jump, so the trapezoid rule integrates it exactly (a jump inside the grid would cost O(step))
    tan = torch.tan(angle * (math.pi / 180.0)).clamp(simulator.mu_low, simulator.mu_high)
    lo = torch.where(slid, lo, tan)
    hi = torch.where(slid, hi, torch.full_like(hi, simulator.mu_high))
    fine = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, grid_size, dtype=torch.float64)
    return fine, normalised(fine, log_lik(fine))


def exact_posterior(time: Tensor, slid: Tensor, length: Tensor, angle: Tensor, simulator: InclinedPlane = InclinedPlane(),
                    levels: Sequence[float] = (0.5, 0.9), grid_size: int = 513, chunk: int = 8192) -> PosteriorSummary:
    """Mean, variance and central ``levels`` intervals of p(μ | observation) for ``(M,)`` observations.

    A box that slid: on its adaptive grid (:func:`posterior_density`). A box that did not slide: the
    posterior is uniform on [a, b] = [max(tan A, μ_lo), μ_hi], in closed form — mean (a + b)/2,
    variance (b − a)²/12, quantile a + q·(b − a).
    """
    time, slid, length, angle = (torch.as_tensor(v).reshape(-1) for v in (time, slid, length, angle))
    slid = slid.to(torch.bool)
    angle = angle.to(torch.float64)
    low = torch.tan(angle * (math.pi / 180.0)).clamp(simulator.mu_low, simulator.mu_high)  # stopped boxes: U(low, μ_hi)
    width = simulator.mu_high - low
    mean_all, var_all = low + width / 2, width * width / 12
    bounds_all = {lv: (low + (1 - lv) / 2 * width, low + (1 + lv) / 2 * width) for lv in levels}
    moved = torch.nonzero(slid).squeeze(1)
    for start in range(0, moved.numel(), chunk):
        rows = moved[start : start + chunk]
        part = summarise(*posterior_density(time[rows], slid[rows], length[rows], angle[rows], simulator, grid_size), levels)
        mean_all[rows], var_all[rows] = part.mean, part.variance
        for level in levels:
            bounds_all[level][0][rows], bounds_all[level][1][rows] = part.intervals[level]
    return PosteriorSummary(mean_all, var_all, bounds_all)
