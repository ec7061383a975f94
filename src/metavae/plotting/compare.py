"""Paper-style (Fig. 6) overlaid bars of held-out probe accuracy for several models, from ``compare.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: the paper's colours (MetaVAE black, VHE blue, NS red) plus the added baselines
COLOURS = {"metavae": "black", "homoencoder": "tab:blue", "neural_statistician": "tab:red",
           "homoencoder_vampprior": "tab:green", "vae": "tab:orange", "vae_per_distribution": "tab:purple"}


def plot_compare(result: dict[str, Any], path: Path) -> Path:
    """Overlaid bars per held-out value, the tallest drawn first so every model stays visible."""
    variants = result["variants"]
    keys = list(next(iter(variants.values()))["per_value"])
    acc = np.array([[v["per_value"][k] for k in keys] for v in variants.values()])  # (models, values)
    names = list(variants)
    pos = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(keys) + 2) + 3.5, 3.6))
    for j in range(len(keys)):
        for i in np.argsort(-acc[:, j]):  # tallest at the back
            ax.bar(pos[j], acc[i, j], width=0.8, color=COLOURS.get(names[i], "grey"), edgecolor="white", linewidth=0.5)
    for i, name in enumerate(names):
        ax.bar([], [], color=COLOURS.get(name, "grey"), label=f"{name} (mean {acc[i].mean():.3f})")
    ax.set_xticks(pos, keys, rotation=45)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"held-out {result['family']} value")
    ax.set_ylabel("probe test accuracy")
    ax.set_title(f"{result['family']} / {result['split']}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
