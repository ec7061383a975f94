"""The exponential families of the sufficient-statistics experiment, against scipy.stats: densities,
moments, samples, maximum-likelihood estimates; the exact posterior against importance sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from metavae.data import expfam

THETAS = {"gaussian": [-7.0, 0.3, 4.0], "lognormal": [-1.5, 0.0, 1.8], "exponential": [0.5, 1.7, 3.0],
          "beta": [0.6, 2.0, 5.0], "weibull": [0.8, 2.5, 5.0], "laplace": [0.4, 1.0, 5.0]}

SCIPY = {  # written here from scipy's parametrisations, independently of the module's table
    "gaussian": lambda t: stats.norm(t, math.sqrt(0.1)),
    "lognormal": lambda t: stats.lognorm(math.sqrt(0.1), scale=math.exp(t)),
    "exponential": lambda t: stats.expon(scale=1 / t),
    "beta": lambda t: stats.beta(t, t),
    "weibull": lambda t: stats.weibull_min(t, scale=1.0),
    "laplace": lambda t: stats.laplace(0.0, t),
}


@pytest.mark.parametrize("family", list(expfam.EXPFAM_FAMILIES))
def test_log_prob_mean_and_variance_against_scipy(family):
    for theta in THETAS[family]:
        ref = SCIPY[family](theta)
        dist = expfam.EXPFAM_FAMILIES[family].torch_distribution(torch.tensor(theta, dtype=torch.float64))
        points = ref.ppf(np.array([0.01, 0.2, 0.5, 0.8, 0.99]))
        assert np.allclose(dist.log_prob(torch.as_tensor(points)).numpy(), ref.logpdf(points), rtol=1e-9, atol=1e-9)
        assert float(dist.mean) == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
        assert float(dist.variance) == pytest.approx(ref.var(), rel=1e-9)


@pytest.mark.parametrize("family", list(expfam.EXPFAM_FAMILIES))
def test_samples_follow_the_family_at_theta(family):
    theta = THETAS[family][1]
    x = expfam.sample(family, [theta], 500, 20, seed=3)
    assert x.shape == (1, 500, 20, 2) and x.dtype == torch.float32
    assert torch.equal(x, expfam.sample(family, [theta], 500, 20, seed=3))
    ref = SCIPY[family](theta)
    for d in range(2):  # both coordinates from the family at θ: a Kolmogorov–Smirnov test each
        assert stats.kstest(x[0, :, :, d].double().flatten().numpy(), ref.cdf).pvalue > 1e-3


def test_links_and_their_inverses():
    theta = torch.tensor([0.05, 1.0, 7.5], dtype=torch.float64)
    for family in expfam.EXPFAM_FAMILIES:
        z = expfam.inverse_link(family, theta)
        assert torch.allclose(expfam.link(family, z), theta, rtol=1e-12)
    assert torch.equal(expfam.inverse_link("gaussian", -theta), -theta)
    assert float(expfam.link("exponential", torch.tensor(0.0))) == pytest.approx(math.log(2))  # softplus(0)
    with pytest.raises(ValueError, match="must be positive"):
        expfam.inverse_link("beta", torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="unknown exponential family 'normal'"):
        expfam.link("normal", torch.zeros(1))


@pytest.mark.parametrize("family", list(expfam.EXPFAM_FAMILIES))
def test_the_decoder_log_likelihood_is_the_sum_of_scipy_log_densities(family):
    x = expfam.sample(family, [THETAS[family][1]], 3, 20, seed=4)[0].double()  # (B=3, 20, 2)
    z = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5 + 0.5  # (K, B, 2)
    out = expfam.log_likelihood(family, x, z)
    assert out.shape == (4, 3)
    theta = expfam.link(family, z)
    for k in range(4):
        for b in range(3):
            expected = sum(SCIPY[family](float(theta[k, b, d])).logpdf(x[b, :, d].numpy()).sum() for d in range(2))
            assert float(out[k, b]) == pytest.approx(expected, rel=1e-9)


def _scipy_mle(family: str, values: np.ndarray) -> float:
    if family == "gaussian":
        return float(values.mean())
    if family == "lognormal":
        return math.log(stats.lognorm.fit(values, f0=math.sqrt(0.1), floc=0)[2])
    if family == "exponential":
        return 1 / stats.expon.fit(values, floc=0)[1]
    if family == "laplace":
        return stats.laplace.fit(values, floc=0)[1]
    if family == "weibull":
        return stats.weibull_min.fit(values, floc=0, fscale=1)[0]
    # symmetric Beta: scipy cannot tie α = β, so maximise its log-density over α directly
    res = optimize.minimize_scalar(lambda s: -stats.beta.logpdf(values, math.exp(s), math.exp(s)).sum(),
                                   bounds=(-8, 8), method="bounded", options={"xatol": 1e-10})
    return math.exp(res.x)


@pytest.mark.parametrize("family", list(expfam.EXPFAM_FAMILIES))
def test_the_maximum_likelihood_estimate_against_scipy(family):
    x = expfam.sample(family, [THETAS[family][2]], 4, 20, seed=5)[0].double()  # (4 observations, 20, 2)
    estimate = expfam.mle(family, x)  # (4, 2): per observation and coordinate
    assert estimate.shape == (4, 2)
    for i in range(4):
        for d in range(2):
            assert float(estimate[i, d]) == pytest.approx(_scipy_mle(family, x[i, :, d].numpy()), rel=1e-4)
    pooled = expfam.mle(family, x.reshape(80, 2), dim=0)  # all the points of x ∪ D at once
    assert float(pooled[0]) == pytest.approx(_scipy_mle(family, x[:, :, 0].flatten().numpy()), rel=1e-4)


@pytest.mark.parametrize("family", list(expfam.EXPFAM_FAMILIES))
def test_the_exact_posterior_mean_against_importance_sampling_from_the_prior(family):
    """μ_k = link(z_k), z_k ~ N(0, 1); weights = the likelihood computed with scipy; within 5 Monte
    Carlo errors. The Gaussian's closed form is checked this way too."""
    x = expfam.sample(family, [THETAS[family][1]], 3, 20, seed=6)[0].double()
    post = expfam.exact_posterior(family, x)
    z = np.random.default_rng(1).standard_normal(200_000)
    theta = z if family in ("gaussian", "lognormal") else np.logaddexp(0.0, z)
    for i in range(3):
        for d in range(2):
            values = x[i, :, d].numpy()
            log_w = np.zeros_like(z)
            for v in values:
                log_w += _logpdf(family, v, theta)
            w = np.exp(log_w - log_w.max())
            w /= w.sum()
            estimate = float((w * theta).sum())
            ess = 1 / float((w * w).sum())
            sd = math.sqrt(float((w * (theta - estimate) ** 2).sum()))
            assert float(post.mean[i, d]) == pytest.approx(estimate, abs=5 * sd / math.sqrt(ess) + 1e-4)
    lo, hi = post.intervals[0.9]
    assert bool((lo < post.mean).all()) and bool((post.mean < hi).all())


def _logpdf(family: str, v: float, theta: np.ndarray) -> np.ndarray:
    """log f(v; θ) for an array of θ, from scipy's vectorised densities."""
    if family == "gaussian":
        return stats.norm.logpdf(v, theta, math.sqrt(0.1))
    if family == "lognormal":
        return stats.lognorm.logpdf(v, math.sqrt(0.1), scale=np.exp(theta))
    if family == "exponential":
        return stats.expon.logpdf(v, scale=1 / theta)
    if family == "beta":
        return stats.beta.logpdf(v, theta, theta)
    if family == "weibull":
        return stats.weibull_min.logpdf(v, theta)
    return stats.laplace.logpdf(v, 0.0, theta)


def test_the_gaussian_posterior_is_the_conjugate_one_and_covers_at_its_level():
    rng_theta = np.random.default_rng(2).standard_normal(3000)  # true z from the prior, the posterior's own setting
    x = torch.as_tensor(rng_theta[:, None, None] + math.sqrt(0.1) * np.random.default_rng(3).standard_normal((3000, 20, 2)))
    post = expfam.exact_posterior("gaussian", x)
    v = 1 / (1 + 20 / 0.1)
    assert torch.allclose(post.mean, v * x.sum(1) / 0.1) and torch.allclose(post.variance, torch.full_like(post.mean, v))
    lo, hi = post.intervals[0.9]
    truth = torch.as_tensor(rng_theta)[:, None]
    coverage = float(((truth >= lo) & (truth <= hi)).double().mean())
    assert abs(coverage - 0.9) < 4 * math.sqrt(0.09 / 6000)


def test_beta_samples_stay_inside_the_open_interval_where_the_references_are_finite():
    x = expfam.sample("beta", [0.3], 2000, 20, seed=0)  # α = 0.3 puts much mass within 1e-8 of 0 and 1
    assert float(x.min()) > 0 and float(x.max()) < 1
    assert bool(torch.isfinite(expfam.mle("beta", x[0])).all())
    post = expfam.exact_posterior("beta", x[0, :50])
    assert bool(torch.isfinite(post.mean).all())
