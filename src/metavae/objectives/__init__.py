"""Objectives: ELBO and IWAE from log-weights."""

from metavae.objectives.bounds import elbo, iwae, log_likelihood

__all__ = ["elbo", "iwae", "log_likelihood"]
