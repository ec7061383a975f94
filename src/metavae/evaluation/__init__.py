"""Evaluation on any task: the linear probe on held-out distributions, log-likelihood per distribution."""

from metavae.evaluation.linear_probe import embed, probe
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood

__all__ = ["embed", "per_distribution_log_likelihood", "probe"]
