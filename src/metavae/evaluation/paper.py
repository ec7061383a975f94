"""Numbers read off the paper's figures (Wu et al., 2020, Fig. 6), for side-by-side tables.

Mean linear-probe accuracy over the held-out values of each MNIST panel; "≈" figures read off
bar plots, about ±0.02. Keys: (family, split) → {model: accuracy}.
"""

from __future__ import annotations

__all__ = ["PAPER_PROBE_ACCURACY"]


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
}
