"""Paper-style (Fig. 6) bar chart of held-out probe accuracy, from a ``probe.json`` dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metavae.plotting.bars import finish, value_axes

__all__ = ["plot_probe"]


def plot_probe(result: dict[str, Any], path: Path, paper_mean: float | None = None) -> Path:
    """Bars: accuracy per held-out value (own classifier, and the reference-value classifier)."""
    keys = list(result["per_value"])
    own = np.array([result["per_value"][k] for k in keys])
    ref = np.array([result["invariance"]["per_value"][k] for k in keys])
    fig, ax, pos = value_axes(keys)
    ax.bar(pos - 0.2, own, width=0.4, color="black", label=f"{result['model']} (mean {own.mean():.3f})")
    ax.bar(pos + 0.2, ref, width=0.4, color="0.65",
           label=f"classifier from {result['family']}={result['invariance']['reference']:g} (mean {ref.mean():.3f})")
    if paper_mean is not None:
        ax.axhline(paper_mean, color="tab:red", ls="--", lw=1, label=f"paper {result['model']} mean ≈ {paper_mean:.2f}")
    return finish(fig, ax, keys, result["family"], f"Linear probe, {result['family']} / {result['split']}", path)
