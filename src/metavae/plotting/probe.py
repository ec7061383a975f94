"""Paper-style (Fig. 6) bar chart of held-out probe accuracy, from a ``probe.json`` dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_probe(result: dict[str, Any], path: Path, paper_mean: float | None = None) -> Path:
    """Bars: accuracy per held-out value (own classifier, and the reference-value classifier)."""
    keys = list(result["per_value"])
    own = np.array([result["per_value"][k] for k in keys])
    ref = np.array([result["invariance"]["per_value"][k] for k in keys])
    pos = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(keys) + 2) + 3.2, 3.4))
    ax.bar(pos - 0.2, own, width=0.4, color="black", label=f"{result['model']} (mean {own.mean():.3f})")
    ax.bar(pos + 0.2, ref, width=0.4, color="0.65",
           label=f"classifier from {result['family']}={result['invariance']['reference']:g} (mean {ref.mean():.3f})")
    if paper_mean is not None:
        ax.axhline(paper_mean, color="tab:red", ls="--", lw=1, label=f"paper {result['model']} mean ≈ {paper_mean:.2f}")
    ax.set_xticks(pos, keys, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"held-out {result['family']} value")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Linear probe, {result['family']} / {result['split']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
