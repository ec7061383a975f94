"""Evaluation on any task: the linear probe on held-out distributions, log-likelihood per distribution;
the invariance distances of paper Table 1; one-dimensional posteriors on adaptive grids, and with them the exact posterior of the inclined-plane
simulator."""

from metavae.evaluation.exact_posterior import exact_posterior, posterior_density
from metavae.evaluation.grid_posterior import PosteriorSummary, grid_posterior
from metavae.evaluation.invariance import InvarianceConfig, invariance_of_runs, measure_invariance
from metavae.evaluation.linear_probe import embed, probe
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood

__all__ = ["InvarianceConfig", "PosteriorSummary", "embed", "exact_posterior", "grid_posterior", "invariance_of_runs", "measure_invariance",
           "per_distribution_log_likelihood", "posterior_density", "probe"]
