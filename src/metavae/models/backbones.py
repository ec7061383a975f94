"""Backbones: the networks every image model is built from, chosen by ``model.backbone``.

Each registered model (MetaVAE, Neural Statistician, VHE, VHE + VampPrior, VAE) asks a
:class:`Backbone` for its parts instead of building networks itself, so there is one class per
model whatever the backbone:

- ``x_encoder``: features of a query image, ``(B, *event) → (B, x_features)``;
- ``element_net(sizes)``: the set encoder's per-element network, ``(P, *event) → (P, sizes[-1])``;
- ``head(sizes)``: an inference network on features, ``sizes = (in, hidden…, out)``;
- ``decoder(groups, in_features)``: ``groups`` decoders of images, the grouped interface of
  :class:`~metavae.nn.GroupedMLP` (``(M, in), group (M,) → (M, prod(event))`` logits);
- ``shared_decoder(in_features)``: one decoder, ``(…, in) → (…, prod(event))``.

``mlp`` (the paper's MNIST models): ``x_encoder`` flattens; MLPs everywhere (the element network
with LeakyReLU 0.2, the others ReLU). ``conv`` (the paper's smallNORB models, §2): one
:class:`~metavae.nn.conv.ConvEncoder` (conv3×3 stages with BatchNorm + ELU; ``conv_channels``
per stage, ``conv_layers_per_stage`` convs each) shared by the query and the context images,
:class:`~metavae.nn.conv.ResidualMLP` heads (ELU), and transposed-conv decoders
(:class:`~metavae.nn.conv.ConvDecoder`, channels ``conv_channels`` reversed; ``hidden_dim`` sizes
the MLP heads only). The image shape comes from the data.

Train and eval modes with the conv backbone: training normalises each network call by its own
batch: the queries in calls of their own (also the query inside the Neural Statistician's set
D ∪ {x}), the shared context pool in another, so a query's statistics never include its own
context (the pool is drawn independently of the queries, so a query's image may itself be among
the pool's, as any image of its distribution may); validation, IWAE, the probe and ``representation`` run in eval mode, where
every example's log-weights depend on that example and its own context only — the quantity IWAE
estimates. The VampPrior's pseudo-sets always go through batch norm in eval behaviour
(:func:`~metavae.nn.conv.batch_norm_statistics_frozen`): they never enter the running statistics of
the images, and the prior is a function of the parameters alone. In training q(c | D) is computed
with batch statistics and the prior's components with running ones, so early in training, before the
running statistics settle, the two are normalised differently (the estimated KL of c is then larger
than in eval mode); in eval mode both use the running statistics. Under data parallelism each rank normalises by its own share (no synchronised batch
norm), so N ranks match one process exactly only with the ``mlp`` backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

from metavae.config.loading import require
from metavae.nn import MLP, GroupedMLP
from metavae.nn.conv import ConvDecoder, ConvEncoder, GroupedDecoder, ResidualMLP

__all__ = ["BackboneConfig", "Backbone", "BACKBONES"]

BACKBONES = ("mlp", "conv")


@dataclass(frozen=True)
class BackboneConfig:
    """The backbone options every image model's config has.

    ``backbone``: ``mlp`` or ``conv``; ``conv_channels``: the conv encoder's channels per stage
    (the paper's ``[64, 128, 256]``; the decoder uses them reversed); ``conv_layers_per_stage``: conv3×3
    layers per stage, the last with stride 2 (the paper's 3).
    """

    backbone: Literal["mlp", "conv"] = "mlp"
    conv_channels: tuple[int, ...] = (64, 128, 256)
    conv_layers_per_stage: int = 3

    def __post_init__(self) -> None:
        require(self.backbone in BACKBONES, "model.backbone", f"choose one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        require(len(self.conv_channels) >= 1 and all(int(c) >= 1 for c in self.conv_channels), "model.conv_channels",
                f"expected a non-empty list of positive channel counts, got {list(self.conv_channels)}")
        require(self.conv_layers_per_stage >= 1, "model.conv_layers_per_stage", f"must be ≥ 1, got {self.conv_layers_per_stage}")


class Backbone:
    """The parts of one model for images of ``event_shape``; see the module docstring.

    With ``conv`` the shared :class:`ConvEncoder` is created here, first (so a model's parameters
    are initialised in a fixed order), and :attr:`x_encoder` is that module; with ``mlp`` it is
    ``nn.Flatten()`` and :attr:`x_features` is ``prod(event_shape)``.
    """

    def __init__(self, config: BackboneConfig, event_shape: Sequence[int]) -> None:
        self.kind = config.backbone
        self.event_shape = tuple(int(s) for s in event_shape)
        self.channels = tuple(int(c) for c in config.conv_channels)
        if self.kind == "conv":
            if len(self.event_shape) != 3:
                raise ValueError(f"model.backbone=conv needs images (C, H, W), got event shape {self.event_shape}")
            self.conv = ConvEncoder(self.event_shape, self.channels, config.conv_layers_per_stage)
            self.x_encoder: nn.Module = self.conv
            self.x_features = self.conv.out_features
        else:
            self.x_encoder = nn.Flatten()
            self.x_features = math.prod(self.event_shape)

    def element_net(self, sizes: Sequence[int]) -> nn.Module:
        """``(P, *event) → (P, sizes[-1])`` through hidden widths ``sizes[:-1]``."""
        if self.kind == "conv":
            return nn.Sequential(self.conv, ResidualMLP((self.x_features, *sizes)))
        return MLP((self.x_features, *sizes), activation="leaky_relu", flatten_from=1)

    def head(self, sizes: Sequence[int]) -> nn.Module:
        """An inference network on features, ``sizes = (in, hidden…, out)``."""
        return ResidualMLP(sizes) if self.kind == "conv" else MLP(sizes)

    def decoder(self, groups: int, sizes: Sequence[int]) -> nn.Module:
        """``groups`` image decoders from ``sizes = (in, hidden…)`` (hidden widths: MLP only)."""
        if self.kind == "conv":
            return GroupedDecoder(groups, lambda: ConvDecoder(sizes[0], self.event_shape, self.channels[::-1]))
        return GroupedMLP(groups, (*sizes, math.prod(self.event_shape)))

    def shared_decoder(self, sizes: Sequence[int]) -> nn.Module:
        """One image decoder ``(…, sizes[0]) → (…, prod(event))``."""
        if self.kind == "conv":
            return ConvDecoder(sizes[0], self.event_shape, self.channels[::-1])
        return MLP((*sizes, math.prod(self.event_shape)))
