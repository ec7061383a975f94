"""MetaVAE: a meta-inference network shared across a family of distributions.

Wu, Choi, Goodman & Ermon, "Meta-Amortized Variational Inference and Learning", AAAI 2020.

For a distribution p_i represented by a context set D_i, the meta-inference network is
q_φ(z | D, x) = N(z; μ, diag σ²), (μ, log σ²) = r(concat(x, h(D))), with h a mean-pooled set
encoder. Each training distribution i has its own decoder p_θi(x | z) and the prior is
p(z) = N(0, I). The MetaELBO for distribution i is
    E_{x∼p_i} E_{q(z|D_i,x)} [log p_θi(x|z) + log p(z) − log q(z|D_i,x)],
obtained as the mean of :meth:`log_weights`. A MetaVAE is a :class:`VAE` with per-distribution
decoders whose encoder also reads the summary h(D). Held-out distributions are embedded with the
posterior mean given a context set from them; decoders are not needed then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import Independent

from metavae.config.loading import require_positive
from metavae.data.context import Context
from metavae.models.backbones import Backbone, BackboneConfig
from metavae.models.base import diagonal_gaussian
from metavae.models.vae import VAE
from metavae.nn import SetEncoder

__all__ = ["MetaVAE", "MetaVAEConfig"]


@dataclass(frozen=True)
class MetaVAEConfig(BackboneConfig):
    """MetaVAE sizes; defaults are the paper's MNIST model.

    summary MLP ``784 → 784 → 400 → 400`` (LeakyReLU 0.2, mean over the set);
    inference net ``(784+400) → 400 → 400 → 2·40`` (ReLU); decoders ``40 → 400 → 400 → 784``.
    With ``backbone: conv`` the 784 inputs become the shared conv encoder's features and the
    decoders transposed convolutions (:mod:`metavae.models.backbones`).
    """

    z_dim: int = 40
    hidden_dim: int = 400
    summary_dim: int = 400
    summary_hidden: tuple[int, ...] = (784, 400)
    pooling: Literal["mean", "max", "sum"] = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "model", "z_dim", "hidden_dim", "summary_dim", "summary_hidden")


class MetaVAE(VAE):
    """q(z | D, x) = r([x, h(D)]) shared by all distributions; one decoder per training distribution.

    Args:
        summary: set encoder h, context → ``(B, summary_dim)``.
        inference_net: r, ``(B, x_features + summary_dim)`` → ``(B, 2·z_dim)`` (loc, log-variance).
        decoder: grouped decoders, ``(M, z_dim)`` and group ``(M,)`` → logits ``(M, prod(event))``, or
            a decoder with its own ``log_prob`` (see :class:`~metavae.models.vae.VAE`).
        event_shape: shape of one data point, e.g. ``(1, 28, 28)``.
        x_encoder: features of x (default ``nn.Flatten()``).

    ``log_weights`` (inherited) gives ``log p_θi(x|z) + log p(z) − log q(z|D, x)``, ``kl`` gives
    ``{"z": KL(q(z|D, x) ‖ N(0, I))}`` and ``representation`` the mean of q(z|D, x). The context
    is required, and ``decoder_index`` too when there is more than one training distribution.
    """

    config_class = MetaVAEConfig
    uses_context = True

    def __init__(self, summary: nn.Module, inference_net: nn.Module, decoder: nn.Module, event_shape: tuple[int, ...],
                 x_encoder: nn.Module | None = None) -> None:
        super().__init__(inference_net, decoder, event_shape, x_encoder)
        self.summary = summary

    @classmethod
    def from_config(cls, config: MetaVAEConfig, event_shape: tuple[int, ...], num_distributions: int) -> "MetaVAE":
        parts = Backbone(config, event_shape)
        summary = SetEncoder(parts.element_net((*config.summary_hidden, config.summary_dim)), pooling=config.pooling)
        inference_net = parts.head((parts.x_features + config.summary_dim, config.hidden_dim, config.hidden_dim,
                                    2 * config.z_dim))
        decoder = parts.decoder(num_distributions, (config.z_dim, config.hidden_dim, config.hidden_dim))
        return cls(summary, inference_net, decoder, event_shape, x_encoder=parts.x_encoder)

    def posterior(self, x: Tensor, context: Tensor | Context | None) -> Independent:
        """q(z | D, x): ``Independent(Normal(loc, scale), 1)`` with batch shape ``(B,)``.

        ``context``: ``(B, N, *event)`` or a ``Context`` (validated by the public methods, not here).
        """
        assert context is not None, "MetaVAE needs a context set"
        features = torch.cat([self.x_encoder(x), self.summary(context)], dim=-1)  # (B, x_features + S)
        return diagonal_gaussian(self.inference_net(features))
