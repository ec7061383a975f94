"""Variational autoencoder (Kingma & Welling, 2014; Rezende et al., 2014), with shared or
per-distribution decoders.

q(z | x) = N(z; μ(x), diag σ²(x)), p(z) = N(0, I), p(x | z) Bernoulli on grey levels. The
context set is ignored: this is the ablation that tells what the context buys. With
``decoders: per_distribution`` each training distribution has its own decoder — a MetaVAE
without the summary network.
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
from metavae.models.base import (
    ELBOTerms,
    LatentTerm,
    LatentVariableModel,
    bernoulli_grey_levels,
    diagonal_gaussian,
    reparameterized_sample,
    standard_normal,
)

__all__ = ["VAE", "VAEConfig"]


@dataclass(frozen=True)
class VAEConfig(BackboneConfig):
    """Encoder ``784 → 400 → 400 → 2·40``, decoder(s) ``40 → 400 → 400 → 784`` (ReLU); with
    ``backbone: conv`` the conv encoder's features and transposed-conv decoders."""

    z_dim: int = 40
    hidden_dim: int = 400
    decoders: Literal["shared", "per_distribution"] = "shared"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "model", "z_dim", "hidden_dim")


class VAE(LatentVariableModel):
    """q(z | x) → z → p_θi(x | z); ``decoder_index`` picks θi when there are several decoders.

    The context is not read (``context=None`` is accepted; a given context is still validated).
    ``decoder_index`` is required with per-distribution decoders; with one shared decoder it may
    be None and is otherwise checked for shape and dtype only.

    Args:
        inference_net: ``(B, x_features) → (B, 2·z_dim)`` (loc, log-variance).
        decoder: grouped decoders with attributes ``num_groups`` and ``in_features``: either
            networks ``(M, z_dim), group (M,) → (M, prod(event))`` logits of the Bernoulli
            likelihood on grey levels (e.g. :class:`~metavae.nn.GroupedMLP`), or a module with
            its own ``log_prob(x (B, *event), z (K, B, z_dim), decoder_index (B,)) → (K, B)``
            (e.g. the parameter-free likelihoods of
            :class:`~metavae.models.family_decoder.FamilyDecoder`).
        event_shape: shape of one data point, e.g. ``(1, 28, 28)``.
        x_encoder: features of x, ``(B, *event) → (B, x_features)``; default ``nn.Flatten()``
            (a conv backbone plugs in here).
    """

    config_class = VAEConfig
    uses_context = False

    def __init__(self, inference_net: nn.Module, decoder: nn.Module, event_shape: tuple[int, ...],
                 x_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.inference_net = inference_net
        self.decoder = decoder
        self.event_shape = tuple(event_shape)
        self.z_dim = decoder.in_features
        self.x_encoder = x_encoder if x_encoder is not None else nn.Flatten()

    @classmethod
    def from_config(cls, config: VAEConfig, event_shape: tuple[int, ...], num_distributions: int) -> "VAE":
        parts = Backbone(config, event_shape)
        groups = num_distributions if config.decoders == "per_distribution" else 1
        return cls(
            parts.head((parts.x_features, config.hidden_dim, config.hidden_dim, 2 * config.z_dim)),
            parts.decoder(groups, (config.z_dim, config.hidden_dim, config.hidden_dim)),
            event_shape,
            x_encoder=parts.x_encoder,
        )

    @property
    def num_decoders(self) -> int:
        """One decoder per training distribution, or one shared decoder."""
        return int(self.decoder.num_groups)

    def posterior(self, x: Tensor, context: Tensor | Context | None) -> Independent:
        """q(z | x), batch shape ``(B,)`` (the context is not used)."""
        return diagonal_gaussian(self.inference_net(self.x_encoder(x)))

    def _elbo_terms(self, x: Tensor, context: Tensor | Context | None, num_samples: int,
                    decoder_index: Tensor | None) -> ELBOTerms:
        """``log p_θi(x | z)`` ``(K, B)`` at z ~ q(z | ·) ``(K, B, z_dim)``, and the term of z:
        q(z | ·) against p(z) = N(0, I), training weight 1.

        So ``log_weights`` is ``log p_θi(x|z) + log p(z) − log q(z | ·)`` (marginal) or
        ``log p_θi(x|z) − KL(q(z | ·) ‖ N(0, I))`` in closed form (training: same ELBO, lower-variance
        gradients), and ``kl`` is ``{"z": KL(q(z | ·) ‖ N(0, I))}`` ``(B,)``, which for
        q = N(μ, diag σ²) is ½ Σ_d (μ_d² + σ_d² − 1 − log σ_d²).
        """
        q = self.posterior(x, context)
        z = reparameterized_sample(q, (num_samples,))  # (K, B, z)
        k, b = z.shape[:2]
        if decoder_index is None or self.num_decoders == 1:
            decoder_index = torch.zeros(b, dtype=torch.long, device=x.device)
        if hasattr(self.decoder, "log_prob"):  # a decoder that is its own likelihood
            log_px = self.decoder.log_prob(x, z, decoder_index)  # (K, B)
        else:
            logits = self.decoder(z.reshape(k * b, -1), decoder_index.repeat(k)).view(k, b, *self.event_shape)
            log_px = bernoulli_grey_levels(logits, len(self.event_shape)).log_prob(x)  # (K, B)
        return ELBOTerms(log_px, (LatentTerm("z", q, standard_normal(self.z_dim, z), z),))

    def _representation(self, x: Tensor, context: Tensor | Context | None) -> Tensor:
        """Mean of q(z | ·), ``(B, z_dim)``."""
        return self.posterior(x, context).mean
