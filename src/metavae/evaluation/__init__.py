"""Evaluation on any task: the linear probe on held-out distributions, log-likelihood per distribution;
the exact posterior of the inclined-plane simulator."""

from metavae.evaluation.exact_posterior import PosteriorSummary, exact_posterior, posterior_density
from metavae.evaluation.linear_probe import embed, probe
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood

__all__ = ["PosteriorSummary", "embed", "exact_posterior", "per_distribution_log_likelihood", "posterior_density", "probe"]
