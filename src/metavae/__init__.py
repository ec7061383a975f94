"""metavae: meta-amortized variational inference (Wu, Choi, Goodman & Ermon, AAAI 2020)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
