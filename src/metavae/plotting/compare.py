"""Paper-style (Fig. 6) overlaid bars of held-out probe accuracy for several models, from ``compare.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch

from metavae.plotting.bars import finish, value_axes

__all__ = ["COLOURS", "plot_compare"]


#: the paper's colours (MetaVAE black, VHE blue, NS red) plus the added baselines
COLOURS = {"metavae": "black", "homoencoder": "tab:blue", "neural_statistician": "tab:red",
           "homoencoder_vampprior": "tab:green", "vae": "tab:orange", "vae_per_distribution": "tab:purple"}


def plot_compare(result: dict[str, Any], path: Path, style: str = "overlaid") -> Path:
    """Probe accuracy per held-out value for every model.

    ``style="overlaid"``: the paper's Fig. 6 look, one bar per value with the models overlaid,
    the tallest drawn first so each model's top edge stays visible. ``style="grouped"``: the
    models side by side, which keeps differences of a point or two readable.
    """
    variants = result["variants"]
    keys = list(next(iter(variants.values()))["per_value"])
    acc = np.array([[v["per_value"][k] for k in keys] for v in variants.values()])  # (models, values)
    names = list(variants)
    colours = [COLOURS.get(n, "grey") for n in names]
    fig, ax, pos = value_axes(keys)
    if style == "overlaid":
        for j in range(len(keys)):
            for i in np.argsort(-acc[:, j]):  # tallest at the back
                ax.bar(pos[j], acc[i, j], width=0.8, color=colours[i], edgecolor="white", linewidth=0.5)
    else:
        width = 0.8 / len(names)
        for i in range(len(names)):
            ax.bar(pos - 0.4 + (i + 0.5) * width, acc[i], width=width, color=colours[i])
    handles = [Patch(color=colours[i], label=f"{n} (mean {acc[i].mean():.3f})") for i, n in enumerate(names)]
    return finish(fig, ax, keys, result["family"], f"{result['family']} / {result['split']}", path, handles)
