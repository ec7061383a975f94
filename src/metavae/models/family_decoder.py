"""Decoders without parameters: p(x | z) is a parametric family's own likelihood at z (paper §4).

With such decoders the inference network q(z | D, x) must recover the family's parameter from the
data: it has to act as a sufficient statistic. :class:`FamilyDecoder` plugs into
:class:`~metavae.models.vae.VAE` and :class:`~metavae.models.metavae.MetaVAE` in place of their
decoder networks (``decoder_index`` picks each query's family); it has no parameters at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from metavae.data.expfam import EXPFAM_FAMILIES, log_likelihood

__all__ = ["FamilyDecoder"]


class FamilyDecoder(nn.Module):
    """``log p(x | z)`` of decoder i = the likelihood of family ``families[i]`` at θ = link(z).

    Args:
        families: the family of each decoder (one per training distribution), names of
            :data:`~metavae.data.expfam.EXPFAM_FAMILIES`.
        z_dim: the latent's size, 2 (one parameter per coordinate of a 2-D point).

    Observations are ``x: (B, P, 2)`` (a set of P points); latents ``z: (K, B, 2)``.
    """

    def __init__(self, families: Sequence[str], z_dim: int = 2) -> None:
        super().__init__()
        unknown = [f for f in families if f not in EXPFAM_FAMILIES]
        if unknown or not families:
            raise ValueError(f"families: expected names among {', '.join(EXPFAM_FAMILIES)}, got {list(families)}")
        self.families = list(families)
        self.kinds = sorted(set(self.families))
        self.register_buffer("family_of", torch.tensor([self.kinds.index(f) for f in self.families]), persistent=False)
        self.num_groups, self.in_features = len(self.families), int(z_dim)

    def log_prob(self, x: Tensor, z: Tensor, decoder_index: Tensor) -> Tensor:
        """``(K, B)``: log p(x_b | z_kb) under the family of ``decoder_index[b]``."""
        kind = self.family_of[decoder_index]  # (B,)
        out = z.new_zeros(z.shape[:2])
        for j, name in enumerate(self.kinds):  # at most a handful of families: one masked pass each
            rows = kind == j
            if bool(rows.any()):
                out[:, rows] = log_likelihood(name, x[rows].to(z.dtype), z[:, rows]).to(out.dtype)
        return out


class _WithPoint(nn.Module):
    """A point's features with the point itself: ``(…, 2) → (…, 2 + out)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.net(x)], dim=-1)


class _LinearPlusMLP(nn.Module):
    """``Linear(v) + MLP(v)``: beyond the data it was trained on, the output follows the linear path."""

    def __init__(self, linear: nn.Linear, mlp: nn.Module) -> None:
        super().__init__()
        self.linear, self.mlp = linear, mlp

    def forward(self, v: Tensor) -> Tensor:
        return self.linear(v) + self.mlp(v)


def sufficient_statistic_model(kind: str, families: Sequence[str], hidden_dim: int = 64, summary_dim: int = 64,
                               points: int = 20, linear_path: bool = False) -> nn.Module:
    """The models of the sufficient-statistics experiment, with parameter-free decoders.

    ``kind="metavae"``: q(z | D, x) from the paper's two-level set encoder — each observation (a set
    of ``points`` 2-D points) is the mean of a per-point MLP (the form of an exponential family's
    sufficient statistic, a mean of per-point features), and D is the mean over its observations
    of a further MLP of those; ``kind="vae"``: q(z | x) from the observation's own features only
    (the paper's baseline, trained on a single distribution). Either way p(x | z) is
    :class:`FamilyDecoder` over ``families`` (one entry per decoder) and z is 2-D.

    ``linear_path``: an encoder meant to extrapolate — each point's features include the point itself
    (so an observation's summary contains the mean of its points, the Gaussian's and the
    exponential's sufficient statistic) and the inference network is ``Linear + MLP``, so that
    beyond the training range its output continues linearly instead of saturating.
    """
    from metavae.models.metavae import MetaVAE
    from metavae.models.vae import VAE
    from metavae.nn import MLP, SetEncoder
    from metavae.nn.mlp import make_activation

    width = hidden_dim + (2 if linear_path else 0)  # an observation's features

    def observation_encoder() -> SetEncoder:  # (B, P, 2) → (B, width): the mean of per-point features
        per_point = MLP((2, hidden_dim, hidden_dim), activation="elu")
        return SetEncoder(_WithPoint(per_point) if linear_path else per_point)

    def inference_net(inputs: int) -> nn.Module:  # → (loc, log-variance) of the 2-D z
        mlp = MLP((inputs, hidden_dim, hidden_dim, 4), activation="elu")
        return _LinearPlusMLP(nn.Linear(inputs, 4), mlp) if linear_path else mlp

    decoder = FamilyDecoder(families)
    event = (points, 2)
    if kind == "vae":
        return VAE(inference_net(width), decoder, event, observation_encoder())
    if kind != "metavae":
        raise ValueError(f"kind: expected 'metavae' or 'vae', got {kind!r}")
    summary = SetEncoder(nn.Sequential(observation_encoder(), make_activation("elu"),
                                       MLP((width, hidden_dim, summary_dim), activation="elu")))
    return MetaVAE(summary, inference_net(width + summary_dim), decoder, event, observation_encoder())
