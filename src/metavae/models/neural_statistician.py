"""Neural Statistician (Edwards & Storkey, "Towards a Neural Statistician", ICLR 2017).

Generative model with a set-level latent c: c ~ p(c) = N(0, I), z ~ p(z | c), x ~ p(x | z, c).
Inference: q(c | S) from a statistic network (mean-pooled set encoder), q(z | x, c).

The set-level ELBO of a set S is
    Σ_{x ∈ S} E_q [log p(x | z, c) + log p(z | c) − log q(z | x, c)] − KL(q(c | S) ‖ p(c)).
Through the per-example seam each query x is explained together with its context D, i.e.
S = D ∪ {x}, and its share of the set's c-term is 1/|S| (``objective="training"``): summed over
the points of S this is the set-level ELBO. With ``objective="marginal"`` the c-term enters
with weight 1, so the weights are proper importance weights of the single-point marginal
    p(x) = ∫∫ p(c) p(z | c) p(x | z, c) dz dc
under the proposal q(c | S) q(z | x, c) — an IWAE over both latents, comparable across models.

``kl`` gives the two unweighted terms {"c": KL(q(c | S) ‖ p(c)), "z": E_{q(c|S)} KL(q(z|x,c) ‖ p(z|c))}.

Representation (probe): the mean of q(z | x, c) at c = the mean of q(c | S) — deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from metavae.config.loading import require_positive
from metavae.data.context import Context, as_context
from metavae.models.backbones import Backbone, BackboneConfig
from metavae.models.base import (
    ELBOTerms,
    LatentTerm,
    LatentVariableModel,
    Objective,
    bernoulli_grey_levels,
    diagonal_gaussian,
    reparameterized_sample,
    standard_normal,
)
from metavae.nn import MLP, SetEncoder

__all__ = ["NeuralStatistician", "NeuralStatisticianConfig"]


@dataclass(frozen=True)
class NeuralStatisticianConfig(BackboneConfig):
    """Sizes as the paper's baselines: statistic net ``784 → 784 → 400 → 400`` (mean over the set)
    → ``2·c_dim``; p(z|c): ``c → 400 → 2·z``; q(z|x,c): ``(784+c) → 400 → 400 → 2·z``;
    p(x|z,c): ``(z+c) → 400 → 400 → 784``. With ``backbone: conv`` the 784 inputs are the shared
    conv encoder's features and p(x|z,c) a transposed-conv decoder (:mod:`metavae.models.backbones`)."""

    z_dim: int = 40
    c_dim: int = 300
    hidden_dim: int = 400
    summary_dim: int = 400
    summary_hidden: tuple[int, ...] = (784, 400)
    pooling: Literal["mean", "max", "sum"] = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        require_positive(self, "model", "z_dim", "c_dim", "hidden_dim", "summary_dim", "summary_hidden")


class NeuralStatistician(LatentVariableModel):
    """c summarises the set S = D ∪ {x}; one shared decoder p(x | z, c).

    The context is required; ``decoder_index`` is ignored (checked for shape and dtype if given).

    Args:
        statistic: set encoder, context → ``(B, summary_dim)``.
        c_head: ``summary_dim → 2·c_dim`` (loc, log-variance of q(c | S)).
        prior_z: ``c_dim → 2·z_dim`` (p(z | c)).
        encoder_z: ``x_dim + c_dim → 2·z_dim`` (q(z | x, c)).
        decoder: ``z_dim + c_dim → x_dim`` logits (p(x | z, c)).
        x_encoder: features of x for q(z | x, c) (default ``nn.Flatten()``).
    """

    config_class: ClassVar[type] = NeuralStatisticianConfig
    query_in_set: ClassVar[bool] = True  # the set c summarises includes the query itself

    def __init__(self, statistic: SetEncoder, c_head: nn.Module, prior_z: nn.Module, encoder_z: nn.Module,
                 decoder: nn.Module, c_dim: int, z_dim: int, event_shape: tuple[int, ...],
                 x_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.x_encoder = x_encoder if x_encoder is not None else nn.Flatten()
        self.statistic = statistic
        self.c_head = c_head
        self.prior_z = prior_z
        self.encoder_z = encoder_z
        self.decoder = decoder
        self.c_dim, self.z_dim = c_dim, z_dim
        self.event_shape = tuple(event_shape)

    @classmethod
    def from_config(cls, config: NeuralStatisticianConfig, event_shape: tuple[int, ...], num_distributions: int):  # type: ignore[override]
        h, c, z = config.hidden_dim, config.c_dim, config.z_dim
        parts = Backbone(config, event_shape)
        statistic = SetEncoder(parts.element_net((*config.summary_hidden, config.summary_dim)), pooling=config.pooling)
        c_head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(config.summary_dim, 2 * c))
        model = cls(statistic, c_head, MLP((c, h, 2 * z)), parts.head((parts.x_features + c, h, h, 2 * z)),
                    parts.shared_decoder((z + c, h, h)), c, z, event_shape, x_encoder=parts.x_encoder)
        model._init_extra(config)
        return model

    def _init_extra(self, config: NeuralStatisticianConfig) -> None:
        """Hook for subclasses that add parameters (e.g. the VampPrior's pseudo-sets)."""

    # ------------------------------------------------------------------ distributions
    def set_for_c(self, x: Tensor, context: Tensor | Context) -> Context:
        """The set c is inferred from: ``D ∪ {x}`` (``query_in_set``) or ``D``."""
        ctx = as_context(context)
        if not self.query_in_set:
            return ctx
        b, p = x.shape[0], ctx.elements.shape[0]
        elements = torch.cat([ctx.elements, x], dim=0)  # (P + B, *event)
        own = torch.arange(p, p + b, device=x.device).unsqueeze(1)  # (B, 1)
        return Context(elements, torch.cat([ctx.index, own], dim=1))  # (B, N + 1)

    def posterior_c(self, sets: Tensor | Context) -> Independent:
        """q(c | S), batch shape ``(B,)``."""
        return diagonal_gaussian(self.c_head(self.statistic(sets)))

    def posterior_c_of_query(self, x: Tensor, context: Tensor | Context) -> tuple[Independent, int]:
        """q(c | S) for S = :meth:`set_for_c` ``(x, context)``, and |S|. The query and the context are
        embedded in separate calls of the statistic network (the same function of S as
        ``posterior_c(set_for_c(x, context))``; with batch norm in training the query's statistics
        then never include its own context)."""
        ctx = as_context(context)
        if not self.query_in_set:
            return self.posterior_c(ctx), ctx.set_size
        return diagonal_gaussian(self.c_head(self.statistic(ctx, x))), ctx.set_size + 1

    def prior_c(self, like: Tensor) -> Distribution:
        """p(c) = N(0, I)."""
        return standard_normal(self.c_dim, like)

    def c_term_weight(self, set_size: int, objective: Objective) -> float:
        """Weight of ``log p(c) − log q(c | S)`` in one query's log-weight: 1 for the marginal
        objective (proper importance weights); 1/|S| in training, so that summed over the points
        of S the c-term enters once, as in the set-level ELBO. ``set_size`` is |S|."""
        return 1.0 if objective == "marginal" else 1.0 / set_size

    def posterior_z(self, x: Tensor, c: Tensor) -> Independent:
        """q(z | x, c) for ``c: (..., B, c_dim)``; batch shape ``(..., B)``."""
        xf = self.x_encoder(x).expand(*c.shape[:-1], -1)  # (..., B, x_features)
        return diagonal_gaussian(self.encoder_z(torch.cat([xf, c], dim=-1)))

    # ------------------------------------------------------------------ the seam
    def _elbo_terms(self, x: Tensor, context: Tensor | Context | None, num_samples: int,
                    decoder_index: Tensor | None) -> ELBOTerms:
        """``log p(x | z, c)`` ``(K, B)`` at c ~ q(c | S) ``(K, B, c_dim)`` then z ~ q(z | x, c)
        ``(K, B, z_dim)``, with the terms of z (q(z|x,c) against p(z|c), weight 1) and of c
        (q(c|S) against p(c), training weight :meth:`c_term_weight`). ``decoder_index`` is ignored.

        So ``log_weights`` is ``log p(x|z,c) + log p(z|c) − log q(z|x,c) + log p(c) − log q(c|S)``
        (marginal) or ``log p(x|z,c) − KL(q(z|x,c) ‖ p(z|c)) − w·KL(q(c|S) ‖ p(c))`` (training, each
        KL in closed form where one exists), and ``kl`` is ``{"z": E_{q(c|S)} KL(q(z|x,c) ‖ p(z|c)),
        "c": KL(q(c|S) ‖ p(c))}`` — for p(c) = N(0, I) the latter is ½ Σ_d (μ_d² + σ_d² − 1 − log σ_d²).
        """
        assert context is not None, f"{type(self).__name__} needs a context set"
        q_c, set_size = self.posterior_c_of_query(x, context)
        c = reparameterized_sample(q_c, (num_samples,))  # (K, B, c)
        q_z = self.posterior_z(x, c)
        z = reparameterized_sample(q_z)  # (K, B, z)
        p_z = diagonal_gaussian(self.prior_z(c))
        logits = self.decoder(torch.cat([z, c], dim=-1)).view(*z.shape[:2], *self.event_shape)
        log_px = bernoulli_grey_levels(logits, len(self.event_shape)).log_prob(x)  # (K, B)
        # z before c: the order the training objective has always subtracted the KLs in (same floats)
        return ELBOTerms(log_px, (
            LatentTerm("z", q_z, p_z, z),
            LatentTerm("c", q_c, self.prior_c(c), c, self.c_term_weight(set_size, "training")),
        ))

    def _representation(self, x: Tensor, context: Tensor | Context | None) -> Tensor:
        """Mean of q(z | x, c) at c = the mean of q(c | S), ``(B, z_dim)``."""
        assert context is not None, f"{type(self).__name__} needs a context set"
        c = self.posterior_c_of_query(x, context)[0].mean  # (B, c)
        return self.posterior_z(x, c).mean
