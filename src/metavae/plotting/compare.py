"""Paper-style (Fig. 6) overlaid bars of held-out probe accuracy for several models, from ``compare.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from metavae.plotting.bars import finish, value_axes

#: the paper's colours (MetaVAE black, VHE blue, NS red) plus the added baselines
COLOURS = {"metavae": "black", "homoencoder": "tab:blue", "neural_statistician": "tab:red",
           "homoencoder_vampprior": "tab:green", "vae": "tab:orange", "vae_per_distribution": "tab:purple"}


def plot_compare(result: dict[str, Any], path: Path) -> Path:
    """Overlaid bars per held-out value, the tallest drawn first so every model stays visible."""
    variants = result["variants"]
    keys = list(next(iter(variants.values()))["per_value"])
    acc = np.array([[v["per_value"][k] for k in keys] for v in variants.values()])  # (models, values)
    names = list(variants)
    fig, ax, pos = value_axes(keys)
    for j in range(len(keys)):
        for i in np.argsort(-acc[:, j]):  # tallest at the back
            ax.bar(pos[j], acc[i, j], width=0.8, color=COLOURS.get(names[i], "grey"), edgecolor="white", linewidth=0.5)
    for i, name in enumerate(names):
        ax.bar([], [], color=COLOURS.get(name, "grey"), label=f"{name} (mean {acc[i].mean():.3f})")
    return finish(fig, ax, keys, result["family"], f"{result['family']} / {result['split']}", path)
