"""Variational Homoencoder (Hewitt, Nye, Gane, Jaakkola & Tenenbaum, UAI 2018).

The Neural Statistician's generative model, with c inferred from a *separate* context set D of
the same distribution (D does not contain the query x), and the KL of c scaled by 1/|D|:
    E_{q(c|D)} E_{q(z|x,c)} [log p(x|z,c) + log p(z|c) − log q(z|x,c)] − (1/|D|)·KL(q(c|D) ‖ p(c)).
That is ``objective="training"``; ``objective="marginal"`` keeps the c-term at weight 1 (proper
importance weights of log p(x) under the proposal q(c|D) q(z|x,c)). ``kl`` reports
KL(q(c|D) ‖ p(c)) unweighted (without the 1/|D|).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from metavae.models.neural_statistician import NeuralStatistician, NeuralStatisticianConfig

__all__ = ["VariationalHomoencoder", "VariationalHomoencoderConfig"]


@dataclass(frozen=True)
class VariationalHomoencoderConfig(NeuralStatisticianConfig):
    """Same sizes as the Neural Statistician (c_dim 300)."""


class VariationalHomoencoder(NeuralStatistician):
    """c ~ q(c | D) with D the context set only; c-KL weighted 1/|D| in training (:meth:`c_term_weight`
    with |S| = |D|)."""

    config_class: ClassVar[type] = VariationalHomoencoderConfig
    query_in_set: ClassVar[bool] = False
