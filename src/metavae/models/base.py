"""The one seam every generative model implements: ``log_weights``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, kl_divergence

from metavae.data.context import Context

Objective = Literal["marginal", "training"]
"""``"marginal"``: proper importance weights of log p(x) (for IWAE, validation, comparison).
``"training"``: the model's own training objective per sample (differs only for models whose
bound re-weights a term, e.g. the 1/|D|-scaled KL of the Variational Homoencoder)."""


class LatentVariableModel(nn.Module):
    """A latent-variable model with an amortised proposal.

    Shapes: query ``x: (B, *event)``, context ``(B, N, *event)`` or a
    :class:`~metavae.data.context.Context`, latents ``(K, B, z_dim)``, log-weights ``(K, B)``.
    ``decoder_index: (B,)`` names the training distribution whose decoder scores each example
    (models with a single decoder ignore it).
    """

    config_class: ClassVar[type]

    def log_weights(
        self,
        x: Tensor,
        context: Tensor | Context | None,
        num_samples: int = 1,
        decoder_index: Tensor | None = None,
        objective: Objective = "marginal",
    ) -> Tensor:
        """``log p(x, latents) − log q(latents | x, context)`` for latents ~ q; shape ``(num_samples, B)``.

        With ``objective="marginal"`` these are proper importance weights, so ``iwae`` of them
        is a stochastic lower bound on ``log p(x)`` comparable across models; their mean is the
        ELBO. ``objective="training"`` gives the per-sample terms the model is trained on.
        """
        raise NotImplementedError

    def representation(self, x: Tensor, context: Tensor | Context) -> Tensor:
        """Deterministic code of each query (posterior mean), ``(B, code_dim)``."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Any, event_shape: tuple[int, ...], num_distributions: int) -> "LatentVariableModel":
        raise NotImplementedError


def kl_term(q: Distribution, p: Distribution, sample: Tensor) -> Tensor:
    """KL(q ‖ p) in closed form where ``torch.distributions`` has one, else the one-sample
    estimate ``log q(s) − log p(s)`` at ``s = sample``. Either way an unbiased estimate of the KL;
    the closed form has lower variance. Used by the ``"training"`` objective only: the
    ``"marginal"`` log-weights must stay per-sample importance weights."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(sample) - p.log_prob(sample)


def diagonal_gaussian(params: Tensor) -> Independent:
    """Split ``(…, 2·d)`` into loc and log-variance: ``Independent(Normal(loc, exp(½·logvar)), 1)``.

    Argument validation is off: the scale is positive by construction, and a NaN coming out of a
    diverged network must flow into the loss, where the trainer's divergence guard names the step,
    rather than stop deep inside ``torch.distributions``.
    """
    loc, logvar = params.chunk(2, dim=-1)
    return Independent(Normal(loc, torch.exp(0.5 * logvar.clamp(-30.0, 20.0)), validate_args=False), 1, validate_args=False)


def standard_normal(dim: int, like: Tensor) -> Independent:
    return Independent(Normal(like.new_zeros(dim), like.new_ones(dim)), 1)


def bernoulli_grey_levels(logits: Tensor, event_dims: int) -> Distribution:
    """Bernoulli likelihood applied to grey levels in [0, 1] (the paper's choice).

    ``log_prob(x) = Σ x·log σ(l) + (1−x)·log(1−σ(l))`` — the binary cross-entropy, which is a
    proper log-density only at binary x; for grey levels it is the standard pseudo-likelihood
    and log-likelihood numbers are comparable between models using it, not with other
    likelihoods. Support validation is therefore switched off.
    """
    return Independent(Bernoulli(logits=logits, validate_args=False), event_dims)
