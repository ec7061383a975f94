"""Generative models behind one seam (``log_weights``), by name."""

from metavae.models.base import LatentVariableModel
from metavae.models.metavae import MetaVAE, MetaVAEConfig

MODELS: dict[str, type[LatentVariableModel]] = {"metavae": MetaVAE}

__all__ = ["MODELS", "LatentVariableModel", "MetaVAE", "MetaVAEConfig"]
