"""Paper-style (Fig. 6) overlaid bars of held-out probe accuracy for several models, from ``compare.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import Patch

from metavae.plotting.bars import finish, plt, value_axes

__all__ = ["COLOURS", "plot_compare", "plot_panel_summary"]


#: the paper's colours (MetaVAE black, VHE blue, NS red) plus the added baselines
COLOURS = {"metavae": "black", "homoencoder": "tab:blue", "neural_statistician": "tab:red",
           "homoencoder_vampprior": "tab:green", "vae": "tab:orange", "vae_per_distribution": "tab:purple"}


def plot_compare(result: dict[str, Any], path: Path, style: str = "overlaid", paper: dict[str, float] | None = None) -> Path:
    """Probe accuracy per held-out value for every model.

    ``style="overlaid"``: the paper's Fig. 6 look, one bar per value with the models overlaid,
    the tallest drawn first so each model's top edge stays visible. ``style="grouped"``: the
    models side by side, which keeps differences of a point or two readable. ``paper`` (model →
    the paper's mean accuracy over the held-out values): a dashed line per model in its colour.
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
    for model, value in (paper or {}).items():
        handles.append(ax.axhline(value, color=COLOURS.get(model, "grey"), linestyle="--", linewidth=1.2,
                                  label=f"paper: {model} (mean ≈{value:.2f})"))
    return finish(fig, ax, keys, result["family"], f"{result['family']} / {result['split']}", path, handles)


def plot_panel_summary(rows: list[tuple[str, dict[str, tuple[float, float | None]]]], path: Path) -> Path:
    """Mean held-out probe accuracy of every panel: per panel and model, our bar (solid) beside
    the paper's (hatched, where the paper has the model). ``rows``: (panel label, model → (ours, paper or None))."""
    models = list(dict.fromkeys(m for _, row in rows for m in row))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)) + 3.5, 3.8))
    width = 0.8 / (2 * len(models))
    for i, model in enumerate(models):
        for j, (_, row) in enumerate(rows):
            if model not in row:
                continue
            ours, ref = row[model]
            left = j - 0.4 + 2 * i * width
            ax.bar(left + width / 2, ours, width=width, color=COLOURS.get(model, "grey"))
            if ref is not None:
                ax.bar(left + 1.5 * width, ref, width=width, color="white", edgecolor=COLOURS.get(model, "grey"), hatch="///")
    ax.set_xticks(np.arange(len(rows)), [label for label, _ in rows], rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean held-out probe accuracy")
    handles = [Patch(color=COLOURS.get(m, "grey"), label=f"{m} (ours)") for m in models]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="paper (Fig. 6 reading)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
