"""Variational Homoencoder with a VampPrior over c (Tomczak & Welling, "VAE with a VampPrior",
AISTATS 2018), as in the MetaVAE paper's baselines.

p(c) = (1/M) Σ_m q(c | U_m): a uniform mixture of the c-posteriors of M learned pseudo-sets
U_m, each of ``pseudo_set_size`` pseudo-images with pixels in [0, 1] (a sigmoid of free
parameters). It is a ``MixtureSameFamily`` of diagonal Gaussians in ``c_dim`` dimensions, so its
normalising constant is that of a c_dim-dimensional density (the 2020 code used that of a
1-dimensional one, ≈275 nats off at c_dim = 300). KL(q(c|D) ‖ p(c)) has no closed form against a
mixture: the training objective and ``kl`` use the estimate log q(c|D) − log p(c) at the drawn c
(``kl`` averaged over its ``num_samples`` draws).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from metavae.config.loading import require_positive
from metavae.models.distributions import DiagonalNormalMixture
from metavae.models.homoencoder import VariationalHomoencoder
from metavae.models.neural_statistician import NeuralStatisticianConfig
from metavae.nn.conv import batch_norm_statistics_frozen

__all__ = ["HomoencoderVampPrior", "HomoencoderVampPriorConfig"]


@dataclass(frozen=True)
class HomoencoderVampPriorConfig(NeuralStatisticianConfig):
    """VHE sizes plus 500 pseudo-sets of 10 pseudo-images."""

    num_pseudo_sets: int = 500
    pseudo_set_size: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "model", "num_pseudo_sets", "pseudo_set_size")


class HomoencoderVampPrior(VariationalHomoencoder):
    """VHE whose prior over c is the VampPrior built from learned pseudo-sets."""

    config_class: ClassVar[type] = HomoencoderVampPriorConfig

    def _init_extra(self, config: NeuralStatisticianConfig) -> None:
        assert isinstance(config, HomoencoderVampPriorConfig)
        # free parameters of the pseudo-images; sigmoid keeps pixels in [0, 1]. Initialised
        # around grey level 0.1 with some spread (MNIST's mean intensity is ≈ 0.13).
        shape = (config.num_pseudo_sets, config.pseudo_set_size, *self.event_shape)
        self.pseudo_logits = nn.Parameter(torch.randn(shape) * 0.5 - 2.2)

    def pseudo_sets(self) -> Tensor:
        """``(M, n, *event)`` pseudo-images in [0, 1]."""
        return torch.sigmoid(self.pseudo_logits)

    def prior_c(self, like: Tensor) -> Distribution:
        """p(c) = (1/M) Σ_m q(c | U_m), a ``MixtureSameFamily`` of diagonal Gaussians, batch shape ``()``.

        The pseudo-sets pass batch normalisation (conv backbone) with its running statistics, in
        training too, so the prior is a function of the parameters alone and the images' running
        statistics never see a pseudo-image."""
        with batch_norm_statistics_frozen(self.statistic):  # pseudo-sets are not data: no batch statistics
            components = self.posterior_c(self.pseudo_sets()).base_dist  # loc, scale: (M, c_dim)
        return DiagonalNormalMixture(torch.zeros(components.loc.shape[0], device=like.device), components.loc, components.scale)
