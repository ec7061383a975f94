"""Numbers of the paper (Wu et al., 2020), for side-by-side tables.

:data:`PAPER_PROBE_ACCURACY` (Fig. 6): mean linear-probe accuracy over the held-out values of each
MNIST and smallNORB panel; "≈" figures read off bar plots, about ±0.02. Keys: (family, split) →
{model: accuracy} (the family names of the two data sets differ).

:data:`PAPER_INVARIANCE` (Table 1): average L2 distance between the representation of a base test
image and of its transformed versions, for MNIST MetaVAEs trained on one family (outer key) and
measured on each family (inner key). The spec (PAPER.md §2) gives each row as "trained-family value
(the other two)"; the other two are read in the order rotate, scale, shear (skew).
"""

from __future__ import annotations

__all__ = ["PAPER_PROBE_ACCURACY", "PAPER_INVARIANCE"]


PAPER_PROBE_ACCURACY: dict[tuple[str, str], dict[str, float]] = {
    ("rotate", "interleaved"): {"metavae": 0.88, "homoencoder": 0.81, "neural_statistician": 0.74},
    ("scale", "interleaved"): {"metavae": 0.91, "homoencoder": 0.57, "neural_statistician": 0.54},
    ("shear", "interleaved"): {"metavae": 0.84, "homoencoder": 0.57, "neural_statistician": 0.49},
    ("rotate", "sparse"): {"metavae": 0.88, "homoencoder": 0.79, "neural_statistician": 0.60},
    ("scale", "sparse"): {"metavae": 0.90, "homoencoder": 0.67, "neural_statistician": 0.46},
    ("shear", "sparse"): {"metavae": 0.84, "homoencoder": 0.53, "neural_statistician": 0.45},
    ("rotate", "contiguous"): {"metavae": 0.89, "homoencoder": 0.80, "neural_statistician": 0.61},
    ("scale", "contiguous"): {"metavae": 0.89, "homoencoder": 0.46, "neural_statistician": 0.33},
    ("shear", "contiguous"): {"metavae": 0.85, "homoencoder": 0.60, "neural_statistician": 0.44},
    ("elevation", "interleaved"): {"metavae": 0.63, "homoencoder": 0.29, "neural_statistician": 0.26},
    ("elevation", "sparse"): {"metavae": 0.67, "homoencoder": 0.31, "neural_statistician": 0.31},
    ("elevation", "contiguous"): {"metavae": 0.60, "homoencoder": 0.30, "neural_statistician": 0.29},
    ("azimuth", "interleaved"): {"metavae": 0.65, "homoencoder": 0.32, "neural_statistician": 0.30},
    ("azimuth", "sparse"): {"metavae": 0.63, "homoencoder": 0.35, "neural_statistician": 0.31},
    ("azimuth", "contiguous"): {"metavae": 0.60, "homoencoder": 0.32, "neural_statistician": 0.31},
    ("lighting", "interleaved"): {"metavae": 0.56, "homoencoder": 0.34, "neural_statistician": 0.33},
    ("lighting", "sparse"): {"metavae": 0.62, "homoencoder": 0.29, "neural_statistician": 0.31},
    ("lighting", "contiguous"): {"metavae": 0.55, "homoencoder": 0.31, "neural_statistician": 0.43},
}

PAPER_INVARIANCE: dict[str, dict[str, float]] = {
    "rotate": {"rotate": 1.65, "scale": 4.44, "shear": 4.09},
    "scale": {"rotate": 5.44, "scale": 2.16, "shear": 4.92},
    "shear": {"rotate": 3.79, "scale": 4.89, "shear": 1.47},
}


def paper_probe_accuracy(dataset: str, family: str, split: str) -> dict[str, float]:
    """The paper's mean probe accuracies of the panel ``(family, split)`` of ``dataset`` (model →
    accuracy); empty for a data set the paper did not use (e.g. Fashion-MNIST)."""
    return PAPER_PROBE_ACCURACY.get((family, split), {}) if dataset in ("mnist", "norb") else {}
