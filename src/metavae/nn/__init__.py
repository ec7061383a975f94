"""Networks: MLPs, set encoders and convolutional parts, injected into models."""

from metavae.nn.conv import ConvDecoder, ConvEncoder, GroupedDecoder, ResidualMLP
from metavae.nn.mlp import MLP, FiLMMLP, GroupedMLP
from metavae.nn.set_encoder import SetEncoder

__all__ = ["MLP", "FiLMMLP", "GroupedMLP", "SetEncoder", "ConvEncoder", "ConvDecoder", "GroupedDecoder", "ResidualMLP"]
