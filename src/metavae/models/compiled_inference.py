"""Compiled inference for the inclined-plane simulator: a network q(μ | ·, t) that reads a measured
descent time and returns a distribution over the friction coefficient μ (paper §3, Fig. 1).

One class, three conditionings (:attr:`CompiledInferenceConfig.conditioning`):

- ``"context"`` — the **meta** inference network q(μ | D, t): D is a context set of boxes from the
  same plane, summarised by a mean-pooled set encoder h(D) (paper: 20 (t, μ) pairs; with
  ``context_features="times"`` the set encoder sees only the boxes' times, as the paper's text
  describes);
- ``"plane"`` — the **oracle** q(μ | L, A, t), told the plane's length and angle instead of
  inferring them from a context set: the gap between it and the meta network is what inferring
  the plane costs;
- ``"none"`` — the **single-plane baseline** q(μ | t), trained on one plane (the paper's L = 10,
  A = 45) and applied to every plane.

Data (:class:`~metavae.data.physics_task.PhysicsTask`): each example is one simulated box,
``x = (time, slid, μ, length, angle)``. The observation the network reads is ``(time, slid)`` as
the features ``(slid, slid·log t, slid/t²)`` (0 for a box that did not slide; 1/t² = a / 2L is
proportional to the acceleration, log t makes the scale of times across planes comparable). μ
of the query is the target and is never an input; the plane's ``(length, angle)`` is read only
by the oracle. Context elements give the same features, plus μ with ``context_features="pairs"``.

The output is a :class:`~metavae.models.distributions.LogitNormalMixture` on the prior's support
``(mu_low, mu_high)`` — every draw and every interval respects μ ∈ (0.0001, 1] — so the posterior
mean and exact quantiles are available. Training minimises E_{p(μ, t, D)}[−log q(μ | D, t)], the
amortised forward KL from the true posterior: its optimum is the exact posterior p(μ | t, plane)
whenever q can represent it (Le, Baydin & Wood 2017, "Inference compilation").

Behind the library's one seam: there are no latent variables, so :meth:`log_weights` is
``log q(μ | ·, t)`` repeated over the K samples (the ``"marginal"`` and ``"training"`` objectives
agree), :meth:`kl` is ``{}``, and :meth:`representation` is the posterior mean of μ, ``(B, 1)``.
The one :class:`~metavae.training.Trainer` therefore trains it on −log q and selects checkpoints
by the validation log q (reported as ``val_iwae``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from metavae.config.loading import require, require_positive
from metavae.data.context import Context, as_context
from metavae.data.physics_task import FIELDS
from metavae.models.base import ELBOTerms, LatentVariableModel, at_least_float32
from metavae.models.distributions import LogitNormalMixture
from metavae.nn import MLP, FiLMMLP, SetEncoder
from metavae.nn.mlp import make_activation

__all__ = ["CompiledInference", "CompiledInferenceConfig", "observation_features"]

TIME, SLID, MU, LENGTH, ANGLE = (FIELDS.index(f) for f in ("time", "slid", "mu", "length", "angle"))


@dataclass(frozen=True)
class CompiledInferenceConfig:
    """Sizes and conditioning of :class:`CompiledInference`.

    ``conditioning``: ``context`` (the meta network), ``plane`` (the oracle) or ``none`` (the
    single-plane baseline). ``context_features``: ``pairs`` (the context's times and μ, as the
    paper's code) or ``times`` (times only, as its text). ``hidden_dim`` × ``layers``: the encoder
    MLP (paper: 3 layers of 10 units; ours is wider, see the README); ``summary_dim`` and
    ``summary_hidden``: the set encoder. ``components``: mixture components of the output.
    ``mu_low``/``mu_high``: the support (the prior's, U(0.0001, 1)).
    """

    conditioning: Literal["context", "plane", "none"] = "context"
    context_features: Literal["pairs", "times"] = "pairs"
    hidden_dim: int = 64
    layers: int = 3
    summary_dim: int = 32
    summary_hidden: int = 64
    components: int = 3
    activation: Literal["relu", "elu", "tanh", "leaky_relu"] = "elu"
    mu_low: float = 1e-4
    mu_high: float = 1.0

    def __post_init__(self) -> None:
        require(self.conditioning in ("context", "plane", "none"), "model.conditioning",
                f"choose context, plane or none, got {self.conditioning!r}")
        require(self.context_features in ("pairs", "times"), "model.context_features",
                f"choose pairs or times, got {self.context_features!r}")
        require(self.activation in ("relu", "elu", "tanh", "leaky_relu"), "model.activation",
                f"choose relu, elu, tanh or leaky_relu, got {self.activation!r}")
        require_positive(self, "model", "hidden_dim", "layers", "summary_dim", "summary_hidden", "components")
        require(0 <= self.mu_low < self.mu_high, "model.mu_low", f"need 0 ≤ mu_low < mu_high, got {self.mu_low}, {self.mu_high}")


def observation_features(x: Tensor) -> Tensor:
    """``(…, 5)`` examples → ``(…, 3)`` features of the measurement: ``(slid, slid·log t, slid/t²)``.

    A box that did not slide gives ``(0, 0, 0)``; its recorded time is never used. Times are
    floored at 1 ms before the log and the square (a slid box's time is ≥ 0.3 s on every plane of
    the paper's grid, so the floor only guards malformed input)."""
    slid = x[..., SLID]
    t = x[..., TIME].clamp_min(1e-3)
    return torch.stack([slid, slid * torch.log(t), slid / t.pow(2)], dim=-1)


class _ContextElement(nn.Module):
    """φ of the set encoder: a context box's features (and its μ for ``pairs``) through an MLP."""

    def __init__(self, net: MLP, with_mu: bool) -> None:
        super().__init__()
        self.net, self.with_mu = net, with_mu

    def forward(self, x: Tensor) -> Tensor:
        features = observation_features(x)
        if self.with_mu:
            features = torch.cat([features, x[..., MU : MU + 1]], dim=-1)
        return self.net(features)


class CompiledInference(LatentVariableModel):
    """q(μ | D, t) (meta), q(μ | L, A, t) (oracle) or q(μ | t) (baseline); see the module docstring.

    Args:
        encoder: network from the observation's features to ``3·components`` outputs (mixture
            logits, locations and log-scales in logit space): a :class:`~metavae.nn.FiLMMLP`
            modulated by the condition (meta, oracle), a plain :class:`~metavae.nn.MLP` (baseline).
        condition: the condition's network, ``(B, summary_dim)``: a set encoder over the context
            boxes (meta) or an MLP of the plane's ``(L/10, A/45)`` (oracle); ``None`` for the baseline.
        config: the :class:`CompiledInferenceConfig` it was built from.
    """

    config_class = CompiledInferenceConfig
    event_shape = (len(FIELDS),)

    def __init__(self, encoder: nn.Module, condition: nn.Module | None, config: CompiledInferenceConfig) -> None:
        super().__init__()
        if (condition is None) != (config.conditioning == "none"):
            raise ValueError("condition: a condition network is needed exactly when conditioning is not 'none'")
        self.encoder, self.condition, self.config = encoder, condition, config
        self.uses_context = config.conditioning == "context"

    @classmethod
    def from_config(cls, config: CompiledInferenceConfig, event_shape: tuple[int, ...] = (len(FIELDS),),
                    num_distributions: int = 1) -> CompiledInference:
        if tuple(event_shape) != cls.event_shape:
            raise ValueError(f"event_shape: CompiledInference reads physics examples {FIELDS}, shape {cls.event_shape}; "
                             f"got {tuple(event_shape)}")
        sizes = (3, *([config.hidden_dim] * config.layers), 3 * config.components)
        hidden = (config.summary_hidden, config.summary_hidden, config.summary_dim)
        if config.conditioning == "none":
            return cls(MLP(sizes, activation=config.activation), None, config)
        if config.conditioning == "context":
            width = 3 + (1 if config.context_features == "pairs" else 0)
            h = config.summary_hidden  # DeepSets ρ(mean φ(x_i)): φ per box, mean over the set, ρ after pooling
            pooled = SetEncoder(_ContextElement(MLP((width, h, h, h), activation=config.activation), config.context_features == "pairs"))
            condition: nn.Module = nn.Sequential(pooled, make_activation(config.activation),
                                                 MLP((h, h, config.summary_dim), activation=config.activation))
        else:
            condition = MLP((2, *hidden), activation=config.activation)
        return cls(FiLMMLP(sizes, config.summary_dim, activation=config.activation), condition, config)

    def posterior(self, x: Tensor, context: Tensor | Context | None) -> LogitNormalMixture:
        """q(μ | ·, t) for each query, batch shape ``(B,)`` (inputs validated by the public methods)."""
        features = observation_features(x)
        if self.config.conditioning == "context":
            if context is None:
                raise ValueError("context: the meta network q(μ | D, t) needs a context set, got None")
            out = self.encoder(features, self.condition(as_context(context)))
        elif self.config.conditioning == "plane":
            out = self.encoder(features, self.condition(torch.stack([x[:, LENGTH] / 10.0, x[:, ANGLE] / 45.0], dim=-1)))
        else:
            out = self.encoder(features)
        out = at_least_float32(out)
        logits, loc, log_scale = out.chunk(3, dim=-1)  # (B, M) each
        # scales in logit space within [e^-12, e^2.3 ≈ 10]: as narrow as the sharpest exact posteriors (a box
        # just short of stopping), and within the range where the mean's 64-node quadrature is exact
        return LogitNormalMixture(logits, loc, torch.exp(log_scale.clamp(-12.0, 2.3)), self.config.mu_low, self.config.mu_high)

    def _elbo_terms(self, x: Tensor, context: Tensor | Context | None, num_samples: int,
                    decoder_index: Tensor | None) -> ELBOTerms:
        log_q = self.posterior(x, context).log_prob(self.target(x))
        return ELBOTerms(log_q.expand(num_samples, -1), ())

    def target(self, x: Tensor) -> Tensor:
        """The μ column of ``x`` (float32 at least), kept 1e-7 inside the support's ends: a draw of
        ``mu_low`` exactly (probability 0, but a float can hit it) must not give log q = −inf."""
        return at_least_float32(x[:, MU]).clamp(self.config.mu_low + 1e-7, self.config.mu_high - 1e-7)

    def _representation(self, x: Tensor, context: Tensor | Context | None) -> Tensor:
        return self.posterior(x, context).mean.unsqueeze(-1)
