"""Shared frame of the accuracy-per-held-out-value bar charts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

__all__ = ["value_axes", "finish"]


def value_axes(keys: list[str]) -> tuple[plt.Figure, Axes, np.ndarray]:
    """A figure wide enough for one bar group per held-out value, room on the right for a legend."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(keys) + 2) + 3.5, 3.6))
    return fig, ax, np.arange(len(keys))


def finish(fig: plt.Figure, ax: Axes, keys: list[str], family: str, title: str, path: Path,
           handles: list[Artist] | None = None) -> Path:
    """Ticks, [0, 1] accuracy axis, labels, legend (``handles``, or the labelled artists) outside
    the bars; save as PNG and close."""
    ax.set_xticks(np.arange(len(keys)), keys, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"held-out {family} value")
    ax.set_ylabel("probe test accuracy")
    ax.set_title(title)
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
