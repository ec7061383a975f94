"""The inclined-plane simulator of the paper's compiled-inference experiment (Wu et al. 2020, Fig. 1; PAPER.md §3).

A box slides down a plane of length L (m) inclined at A degrees; its friction coefficient is
μ ~ U(``mu_low``, ``mu_high``) = U(0.0001, 1). Its acceleration is

    a(μ) = g·sin A − g·cos A·μ,  g = 9.8 m/s²,

and, if a > 0, it reaches the bottom after t = √(2L / a) seconds; the time is measured with
Gaussian noise of standard deviation ``noise`` = 0.02 s. If a ≤ 0, i.e. μ ≥ tan A, the box **does
not slide**: that is an outcome of its own (``slid = False``), with no time (``time = +inf``), never
a sentinel number. It tells only that μ ≥ tan A.

``method="euler"`` integrates the motion with explicit Euler steps of ``dt`` = 0.005 s, as the 2020
code did: x_{k+1} = x_k + v_k·dt, v_{k+1} = v_k + a·dt from rest, so x_n = a·dt²·n(n−1)/2 and the
box is past L after the first n with n(n−1) ≥ 2L/(a·dt²) — computed directly, for every simulation
at once (the recursion has this closed form; no loop over steps). The Euler time n·dt exceeds the
exact time T by less than 2·dt.

Everything is vectorised over planes and simulations and seeded by a ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["GRAVITY", "InclinedPlane", "PlaneSimulation", "TRAIN_PLANES", "TEST_PLANES", "acceleration", "descent_time"]

GRAVITY = 9.8

#: the paper's 25 training planes (L, A): L ∈ {2, 4, 6, 8, 10} × A ∈ {20, 30, 40, 50, 60}
TRAIN_PLANES: tuple[tuple[float, float], ...] = tuple((float(L), float(A)) for L in (2, 4, 6, 8, 10) for A in (20, 30, 40, 50, 60))
#: the 304 test planes: L ∈ 1..19 × A ∈ 5..80 by 5
TEST_PLANES: tuple[tuple[float, float], ...] = tuple((float(L), float(A)) for L in range(1, 20) for A in range(5, 81, 5))


def acceleration(mu: Tensor, angle: Tensor) -> Tensor:
    """a = g·sin A − g·cos A·μ for ``angle`` in degrees (broadcast)."""
    rad = angle * (math.pi / 180.0)
    return GRAVITY * (torch.sin(rad) - torch.cos(rad) * mu)


def descent_time(length: Tensor, angle: Tensor, mu: Tensor, method: Literal["closed_form", "euler"] = "closed_form",
                 dt: float = 0.005) -> Tensor:
    """Noise-free descent time (s), broadcast over the arguments; ``+inf`` where the box does not slide (a ≤ 0)."""
    a = acceleration(mu, angle)
    slides = a > 0
    a_pos = torch.where(slides, a, torch.ones_like(a))
    if method == "closed_form":
        t = torch.sqrt(2 * length / a_pos)
    elif method == "euler":
        s2 = 2 * length / (a_pos * dt * dt)  # n(n − 1) ≥ s2: the first Euler step at or past L
        n = torch.ceil((1 + torch.sqrt(1 + 4 * s2)) / 2)
        n = n - ((n - 1) * (n - 2) >= s2).to(n.dtype)  # guard the rounding of the square root, both ways
        n = n + (n * (n - 1) < s2).to(n.dtype)
        t = n * dt
    else:
        raise ValueError(f"method: expected 'closed_form' or 'euler', got {method!r}")
    return torch.where(slides, t, torch.full_like(t, math.inf))


@dataclass(frozen=True)
class PlaneSimulation:
    """``num`` simulations on each of P planes: ``length, angle: (P,)``; ``mu, time, slid: (P, num)``.

    ``time`` is the measured time (noise added) where ``slid``, ``+inf`` where the box did not slide.
    """

    length: Tensor
    angle: Tensor
    mu: Tensor
    time: Tensor
    slid: Tensor


@dataclass(frozen=True)
class InclinedPlane:
    """The simulator: prior μ ~ U(mu_low, mu_high), measurement noise ``noise`` (s), ``method`` of
    computing the descent (``closed_form`` or the 2020 code's ``euler`` with step ``dt``)."""

    noise: float = 0.02
    mu_low: float = 1e-4
    mu_high: float = 1.0
    method: Literal["closed_form", "euler"] = "closed_form"
    dt: float = 0.005

    def __post_init__(self) -> None:
        if not (self.noise > 0 and 0 <= self.mu_low < self.mu_high and self.dt > 0):
            raise ValueError(f"InclinedPlane: need noise > 0, 0 ≤ mu_low < mu_high and dt > 0, got {self}")
        if self.method not in ("closed_form", "euler"):
            raise ValueError(f"method: expected 'closed_form' or 'euler', got {self.method!r}")

    def simulate(self, length: Tensor, angle: Tensor, num: int, generator: torch.Generator | None = None) -> PlaneSimulation:
        """``num`` independent boxes on each plane ``(length[p], angle[p])``; float64 throughout."""
        length = torch.as_tensor(length, dtype=torch.float64)
        angle = torch.as_tensor(angle, dtype=torch.float64)
        if length.dim() != 1 or length.shape != angle.shape:
            raise ValueError(f"length, angle: expected two tensors of shape (P,), got {tuple(length.shape)} and {tuple(angle.shape)}")
        if not bool((length > 0).all()) or not bool(((angle > 0) & (angle < 90)).all()):
            raise ValueError("length, angle: expected lengths > 0 and angles in (0, 90) degrees")
        p = length.shape[0]
        mu = self.mu_low + (self.mu_high - self.mu_low) * torch.rand(p, num, generator=generator, dtype=torch.float64)
        exact = descent_time(length[:, None], angle[:, None], mu, self.method, self.dt)  # (P, num)
        slid = torch.isfinite(exact)
        noise = self.noise * torch.randn(p, num, generator=generator, dtype=torch.float64)
        return PlaneSimulation(length, angle, mu, torch.where(slid, exact + noise, exact), slid)
