"""MSE of the inferred parameter against the true parameter (paper Figs. 2–3 style), from ``sweep.csv`` rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metavae.files import atomic_write  # noqa: E402

__all__ = ["plot_sweeps"]

STYLE = {"exact_posterior": ("black", "-", "exact posterior mean given x"),
         "mle_x": ("0.5", "--", "MLE from x"),
         "mle_x_and_context": ("0.5", ":", "MLE from x ∪ D")}


def plot_sweeps(rows: list[dict[str, Any]], training_ranges: dict[str, tuple[float, float]], path: Path) -> Path:
    """One panel per family: every estimator's MSE against θ (log scale), the training range shaded."""
    families = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4.0), squeeze=False, layout="constrained")
    for ax, family in zip(axes[0], families):
        here = [r for r in rows if r["family"] == family]
        for name in dict.fromkeys(r["estimator"] for r in here):
            points = sorted((r["theta"], r["mse"]) for r in here if r["estimator"] == name)
            colour, dash, label = STYLE.get(name, (None, "-", name))
            ax.plot([p[0] for p in points], [p[1] for p in points], ls=dash, color=colour, lw=1.6 if name in STYLE else 1.2,
                    label=label, marker=None if name in STYLE else ".")
        if family in training_ranges:
            ax.axvspan(*training_ranges[family], color="tab:blue", alpha=0.08, label="training range")
        ax.set_yscale("log")
        ax.set_xlabel("true parameter θ")
        ax.set_title(family)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("MSE of the inferred θ")
    atomic_write(Path(path), lambda fh: fig.savefig(fh, dpi=110, format="png"))
    plt.close(fig)
    return Path(path)
