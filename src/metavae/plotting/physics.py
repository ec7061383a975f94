"""Angle × length heatmaps of the physics evaluation (paper Fig. 1), from the rows of ``planes.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from metavae.files import atomic_write  # noqa: E402

__all__ = ["plot_heatmaps", "plot_ratios", "grid"]

TITLES = {"bayes": "exact posterior (Bayes floor)", "meta": "meta q(μ | D, t)", "oracle": "oracle q(μ | L, A, t)",
          "baseline": "single-plane baseline q(μ | t)", "meta_times": "meta, context of times"}


def grid(rows: list[dict[str, Any]], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lengths (nL,), angles (nA,), values (nL, nA))`` of ``column``; NaN where a plane is missing."""
    lengths = np.array(sorted({float(r["length"]) for r in rows}))
    angles = np.array(sorted({float(r["angle"]) for r in rows}))
    values = np.full((lengths.size, angles.size), np.nan)
    for r in rows:
        values[np.searchsorted(lengths, float(r["length"])), np.searchsorted(angles, float(r["angle"]))] = float(r[column])
    return lengths, angles, values


def _training_box(ax: Any, lengths: np.ndarray, angles: np.ndarray, colour: str) -> None:
    """Outline the training range A ∈ [20, 60], L ∈ [2, 10] (cells are centred on the planes)."""
    da, dl = np.diff(angles).min(initial=5.0), np.diff(lengths).min(initial=1.0)
    ax.add_patch(Rectangle((20 - da / 2, 2 - dl / 2), 40 + da, 8 + dl, fill=False, ec=colour, lw=1.5, ls="--"))


def _panel(ax: Any, rows: list[dict[str, Any]], column: str, norm: Any, cmap: str, box: str = "white") -> Any:
    lengths, angles, values = grid(rows, column)
    da, dl = np.diff(angles).min(initial=5.0), np.diff(lengths).min(initial=1.0)
    image = ax.imshow(values, origin="lower", aspect="auto", norm=norm, cmap=cmap,
                      extent=(angles[0] - da / 2, angles[-1] + da / 2, lengths[0] - dl / 2, lengths[-1] + dl / 2))
    _training_box(ax, lengths, angles, box)
    ax.set_xlabel("angle A (degrees)")
    return image


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_heatmaps(rows: list[dict[str, Any]], variants: list[str], path: Path) -> Path:
    """MSE of the posterior mean per plane, one panel per variant and the Bayes floor, on one
    logarithmic colour scale (so the panels compare at a glance); the training range outlined."""
    columns = ["bayes", *variants]
    values = np.array([[float(r[f"mse_{c}"]) for r in rows] for c in columns])
    positive = values[values > 0]
    norm = LogNorm(vmin=max(positive.min(), 1e-6), vmax=positive.max())
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns) + 1, 4.0), sharey=True, squeeze=False, layout="constrained")
    for ax, c in zip(axes[0], columns):
        image = _panel(ax, rows, f"mse_{c}", norm, "viridis")
        ax.set_title(f"{TITLES.get(c, c)}\nmean MSE {np.mean([float(r[f'mse_{c}']) for r in rows]):.4f}", fontsize=9)
    axes[0][0].set_ylabel("length L (m)")
    fig.colorbar(image, ax=axes[0].tolist(), label="MSE of the posterior mean of μ (log scale)")
    fig.suptitle("Inclined plane: MSE per test plane (dashed: training range)", fontsize=10)
    return _save(fig, path)


def plot_ratios(rows: list[dict[str, Any]], variants: list[str], path: Path) -> Path:
    """MSE / Bayes MSE per plane for each variant, log colour scale centred on 1 (white = the floor)."""
    ratios = np.array([[float(r[f"ratio_{v}"]) for r in rows] for v in variants])
    top = max(float(np.nanmax(ratios)), 2.0)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-0.05, vmax=np.log10(top))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants) + 1, 4.0), sharey=True, squeeze=False, layout="constrained")
    for ax, v in zip(axes[0], variants):
        log_rows = [{**r, "log_ratio": np.log10(max(float(r[f"ratio_{v}"]), 1e-12))} for r in rows]
        image = _panel(ax, log_rows, "log_ratio", norm, "RdBu_r", box="black")
        median = np.median([float(r[f"ratio_{v}"]) for r in rows])
        ax.set_title(f"{TITLES.get(v, v)}\nmedian ratio {median:.2f}", fontsize=9)
    axes[0][0].set_ylabel("length L (m)")
    bar = fig.colorbar(image, ax=axes[0].tolist(), label="log10(MSE / Bayes MSE)")
    bar.ax.axhline(np.log10(1.2), color="black", lw=1)
    fig.suptitle("Inclined plane: MSE relative to the exact posterior (0 = Bayes-optimal; line: 1.2×)", fontsize=10)
    return _save(fig, path)
