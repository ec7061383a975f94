"""Networks: MLPs and set encoders, injected into models."""

from metavae.nn.mlp import MLP, FiLMMLP, GroupedMLP
from metavae.nn.set_encoder import SetEncoder

__all__ = ["MLP", "FiLMMLP", "GroupedMLP", "SetEncoder"]
