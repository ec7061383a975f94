"""One-dimensional posteriors on adaptive grids: what the exact references of the physics and
exponential-family experiments are computed with.

For M observations at once, each with a log-density ``log p(θ | obs)`` known up to a constant on
an interval: a coarse uniform grid over the interval finds where the density exceeds e⁻⁴⁰ of its
maximum (:func:`adaptive_window`); a fine uniform grid over that window, widened by one coarse step
on each side (a peak between two coarse points stays inside), carries the density, normalised by
the trapezoid rule (:func:`normalised`); :func:`summarise` gives the posterior mean, variance and
central credible intervals of any increasing function of the parameter. The 1-D integral on the
fine grid is the only approximation; its error shrinks with the grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["PosteriorSummary", "adaptive_window", "normalised", "summarise", "grid_posterior"]


@dataclass(frozen=True)
class PosteriorSummary:
    """Per observation ``(M,)``: ``mean``, ``variance`` and, per requested level, the central
    interval ``intervals[level] = (lower (M,), upper (M,))``."""

    mean: Tensor
    variance: Tensor
    intervals: dict[float, tuple[Tensor, Tensor]]


LogDensity = Callable[[Tensor], Tensor]
"""``grid (M, J)`` → log-density up to a constant per row, ``(M, J)``; −inf where impossible."""


def adaptive_window(log_density: LogDensity, low: Tensor | float, high: Tensor | float, num_rows: int,
                    coarse_size: int = 257) -> tuple[Tensor, Tensor]:
    """``(lo (M,), hi (M,))``: the part of ``[low, high]`` where the density exceeds e⁻⁴⁰ of its
    maximum on a ``coarse_size`` grid, widened by one coarse step on each side. ``low``/``high``:
    ``(M,)`` tensors, or numbers shared by all ``num_rows`` rows (then one grid serves every row)."""
    steps = torch.linspace(0, 1, coarse_size, dtype=torch.float64)
    if isinstance(low, Tensor) or isinstance(high, Tensor):
        low_t, high_t = (torch.as_tensor(v, dtype=torch.float64).expand(num_rows) for v in (low, high))
        coarse = low_t[:, None] + (high_t - low_t)[:, None] * steps  # (M, J)
    else:
        coarse = (low + (high - low) * steps).expand(num_rows, -1)  # one grid, viewed M times
    values = log_density(coarse)
    keep = values > values.amax(dim=1, keepdim=True) - 40.0
    index = torch.arange(coarse_size).expand_as(keep)
    first = torch.where(keep, index, coarse_size).amin(1).sub(1).clamp_min(0)
    last = torch.where(keep, index, -1).amax(1).add(1).clamp_max(coarse_size - 1)
    if coarse.stride(0) == 0:
        return coarse[0, first], coarse[0, last]
    return coarse.gather(1, first[:, None]).squeeze(1), coarse.gather(1, last[:, None]).squeeze(1)


def normalised(grid: Tensor, log_density: Tensor) -> Tensor:
    """Densities on per-row uniform grids ``grid: (M, J)`` that integrate to 1 by the trapezoid rule."""
    weights = torch.exp(log_density - log_density.amax(dim=1, keepdim=True))  # stable: the largest term is e^0
    step = grid[:, 1] - grid[:, 0]  # (M,)
    mass = (weights.sum(1) - (weights[:, 0] + weights[:, -1]) / 2) * step
    return weights / mass[:, None]


def summarise(grid: Tensor, density: Tensor, levels: Sequence[float] = (0.5, 0.9),
              transform: Callable[[Tensor], Tensor] | None = None) -> PosteriorSummary:
    """Mean, variance and central ``levels`` intervals of ``f(θ)`` (``f`` = ``transform``, increasing;
    default the identity) under the normalised ``density`` on ``grid`` ``(M, J)`` (trapezoid rule;
    quantiles by linear interpolation of the cumulative distribution between grid points)."""
    values = grid if transform is None else transform(grid)
    step = (grid[:, 1] - grid[:, 0])[:, None]  # (M, 1)
    w = density * step  # trapezoid weights: ∫ f p dθ ≈ Σ w f
    w[:, 0] /= 2
    w[:, -1] /= 2
    mean = (w * values).sum(1)
    variance = ((w * values * values).sum(1) - mean * mean).clamp_min(0.0)
    cdf = torch.cumsum((density[:, 1:] + density[:, :-1]) * (step / 2), dim=1)  # (M, J−1), at grid[:, 1:]
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=1) / cdf[:, -1:]  # (M, J), from 0 to 1
    intervals = {lv: (_quantile(values, cdf, (1 - lv) / 2), _quantile(values, cdf, (1 + lv) / 2)) for lv in levels}
    return PosteriorSummary(mean, variance, intervals)


def grid_posterior(log_density: LogDensity, low: Tensor | float, high: Tensor | float, levels: Sequence[float] = (0.5, 0.9),
                   transform: Callable[[Tensor], Tensor] | None = None, grid_size: int = 513,
                   coarse_size: int = 257) -> PosteriorSummary:
    """:func:`summarise` of the posterior on the adaptive fine grid of :func:`adaptive_window`."""
    rows = next((v.shape[0] for v in (low, high) if isinstance(v, Tensor)), None)
    if rows is None:
        raise ValueError("grid_posterior: give low or high as a (M,) tensor (the number of observations)")
    lo, hi = adaptive_window(log_density, low, high, rows, coarse_size)
    fine = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, grid_size, dtype=torch.float64)
    return summarise(fine, normalised(fine, log_density(fine)), levels, transform)


def _quantile(grid: Tensor, cdf: Tensor, q: float) -> Tensor:
    """Per row, the value at which the non-decreasing ``cdf`` reaches ``q`` (linear interpolation on that row's grid)."""
    target = torch.full((cdf.shape[0], 1), q, dtype=cdf.dtype)
    right = torch.searchsorted(cdf.contiguous(), target, right=False).clamp(1, grid.shape[1] - 1)  # (m, 1)
    c0, c1 = cdf.gather(1, right - 1), cdf.gather(1, right)
    g0, g1 = grid.gather(1, right - 1), grid.gather(1, right)
    frac = ((target - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0.0, 1.0)
    return (g0 + frac * (g1 - g0)).squeeze(1)
