"""Estimator identities and IWAE → exact log p(x) on a linear-Gaussian model."""

import math

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from metavae.objectives import elbo, iwae, log_likelihood


class LinearGaussian(nn.Module):
    """z ~ N(0, I_d), x | z ~ N(W z + b, σ² I); proposal q(z | x) = N(A x + c, diag s²), deliberately not exact.

    The marginal is known: x ~ N(b, W Wᵀ + σ² I). The context is ignored.
    """

    def __init__(self, d: int = 2, D: int = 3, sigma: float = 0.7) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.W = torch.randn(D, d, generator=g, dtype=torch.float64)
        self.b = torch.randn(D, generator=g, dtype=torch.float64)
        self.sigma = sigma
        # the exact posterior mean map, perturbed, and an inflated scale
        cov_post = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + self.W.T @ self.W / sigma**2)
        self.A = cov_post @ self.W.T / sigma**2 + 0.1
        self.scale = cov_post.diagonal().sqrt() * 1.3

    def log_weights(self, x, context, num_samples=1, decoder_index=None):
        q = Independent(Normal((x - self.b) @ self.A.T, self.scale.expand(x.shape[0], -1)), 1)
        z = q.rsample((num_samples,))  # (K, B, d)
        prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
        lik = Independent(Normal(z @ self.W.T + self.b, self.sigma), 1)
        return lik.log_prob(x) + prior.log_prob(z) - q.log_prob(z)

    def exact_log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)


def test_iwae_with_one_sample_equals_elbo():
    log_w = torch.randn(1, 7)
    torch.testing.assert_close(iwae(log_w), elbo(log_w))


def test_iwae_formula_and_jensen_per_draw():
    log_w = torch.randn(50, 4, dtype=torch.float64)
    torch.testing.assert_close(iwae(log_w), torch.log(torch.exp(log_w).mean(0)))
    assert (iwae(log_w) >= elbo(log_w)).all()  # log-mean-exp ≥ mean of logs, draw by draw


def test_iwae_above_elbo_in_expectation_and_converges_to_exact_log_marginal():
    torch.manual_seed(0)
    model = LinearGaussian()
    x = torch.randn(6, 3, dtype=torch.float64)
    exact = model.exact_log_marginal(x)
    mean_elbo = elbo(model.log_weights(x, None, 20_000))
    iwae_10 = torch.stack([iwae(model.log_weights(x, None, 10)) for _ in range(2000)]).mean(0)
    iwae_big = log_likelihood(model, x, None, 200_000, samples_per_chunk=20_000)
    assert (mean_elbo < iwae_10).all() and (iwae_10 < exact + 1e-3).all()
    assert (exact - mean_elbo).min() > 0.01  # the proposal is not exact, so the gap is real
    torch.testing.assert_close(iwae_big, exact, atol=3e-3, rtol=0)
    assert (exact - iwae_10).mean() > (exact - iwae_big).abs().mean()  # tightens with K


def test_chunked_log_likelihood_equals_unchunked_on_same_draws():
    model = LinearGaussian()
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.manual_seed(11)
    whole = log_likelihood(model, x, None, 64)
    torch.manual_seed(11)
    chunks = log_likelihood(model, x, None, 64, samples_per_chunk=16)
    # same importance samples only if the proposal draws are consumed in the same order
    torch.manual_seed(11)
    draws = torch.cat([model.log_weights(x, None, 16) for _ in range(4)])
    torch.testing.assert_close(chunks, torch.logsumexp(draws, 0) - math.log(64))
    assert whole.shape == chunks.shape == (5,)
    torch.testing.assert_close(whole, chunks, atol=0.05, rtol=0)  # both are estimates of the same log p(x)
