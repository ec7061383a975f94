"""Correctness of the baselines: analytic ELBOs, the VHE's 1/|D|, the VampPrior density, model selection."""

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from conftest import TINY
from metavae.config import load_config, with_overrides
from metavae.experiments.transformed_images import VARIANTS, train, variant_config
from metavae.models import MODELS, HomoencoderVampPrior, NeuralStatistician, VariationalHomoencoder
from metavae.models.base import bernoulli_grey_levels, diagonal_gaussian, standard_normal
from metavae.models.distributions import DiagonalNormalMixture
from metavae.objectives import elbo, iwae, log_likelihood
from pipeline_helpers import ScriptedValidation, same_state

EVENT = (1, 4, 4)
SIZES = {"hidden_dim": 12, "summary_dim": 6, "summary_hidden": [10], "z_dim": 2, "c_dim": 3,
         "num_pseudo_sets": 4, "pseudo_set_size": 3}


def _build(name, **extra):
    import dataclasses

    cls = MODELS[name]
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    cfg = load_config(None, [("model.name", name)] + [(f"model.{k}", v) for k, v in {**SIZES, **extra}.items() if k in valid])
    torch.manual_seed(0)
    return cls.from_config(cfg.model, EVENT, 2).double()


def _data(b=3, n=5):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(b, *EVENT, generator=g, dtype=torch.float64),
            torch.rand(b, n, *EVENT, generator=g, dtype=torch.float64), torch.tensor([0, 1, 0][:b]))


def _last_linear(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


@torch.no_grad()
def test_vae_and_metavae_elbo_equals_analytic_value_when_decoder_ignores_z():
    """With the decoder's last weights at zero, log p(x|z) is constant and E_q[log w] = log p(x|·) − KL(q‖N(0,I))."""
    for name, extra in (("metavae", {}), ("vae", {}), ("vae", {"decoders": "per_distribution"})):
        model = _build(name, **extra)
        model.decoder.weights[-1].zero_()
        x, ctx, idx = _data()
        q = model.posterior(x, ctx)
        groups = idx if model.decoder.num_groups > 1 else torch.zeros_like(idx)
        logits = model.decoder.biases[-1][groups, 0].view(3, *EVENT)
        analytic = bernoulli_grey_levels(logits, 3).log_prob(x) - kl_divergence(q, standard_normal(2, x))
        torch.manual_seed(0)
        mc = elbo(model.log_weights(x, ctx, 200_000, decoder_index=idx))
        torch.testing.assert_close(mc, analytic, atol=0.02, rtol=0)


@pytest.mark.parametrize("cls, weight", [(NeuralStatistician, lambda n: 1 / (n + 1)), (VariationalHomoencoder, lambda n: 1 / n),
                                         (HomoencoderVampPrior, lambda n: 1 / n)])
@torch.no_grad()
def test_ns_vhe_vampprior_elbo_equals_analytic_value(cls, weight):
    """Make p(z|c), q(z|x,c) and p(x|z,c) ignore the latents' randomness where needed, then
    E[log w] = log p(x) − KL(q(z|x)‖p(z)) − w·KL(q(c|S)‖p(c)), with w = 1 (marginal) or the
    model's set weight (training): 1/(N+1) for NS (S = D ∪ {x}), 1/|D| for the VHE. For the
    VampPrior with one pseudo-set, p(c) = q(c | U_1) is Gaussian, so its KL is analytic too."""
    model = _build(next(k for k, v in MODELS.items() if v is cls), num_pseudo_sets=1)
    x, ctx, _ = _data(n=5)
    _last_linear(model.decoder).weight.zero_()  # p(x|z,c) constant
    _last_linear(model.prior_z).weight.zero_()  # p(z|c) constant
    first = [m for m in model.encoder_z.modules() if isinstance(m, torch.nn.Linear)][0]
    first.weight[:, 16:].zero_()  # q(z|x,c) ignores c (x has 16 features)
    sets = model.set_for_c(x, ctx)
    assert sets.set_size == (6 if cls is NeuralStatistician else 5)
    q_c = model.posterior_c(sets)
    c0 = torch.zeros(3, 3, dtype=torch.float64)
    q_z, p_z = model.posterior_z(x, c0), diagonal_gaussian(model.prior_z(c0))
    logits = _last_linear(model.decoder).bias.view(*EVENT).expand(3, *EVENT)
    log_px = bernoulli_grey_levels(logits, 3).log_prob(x)
    p_c = model.posterior_c(model.pseudo_sets()) if cls is HomoencoderVampPrior else standard_normal(3, x)
    kl_c = kl_divergence(q_c, p_c)
    for objective, w in (("marginal", 1.0), ("training", weight(5))):
        torch.manual_seed(0)
        mc = elbo(model.log_weights(x, ctx, 200_000, objective=objective))
        analytic = log_px - kl_divergence(q_z, p_z) - w * kl_c
        torch.testing.assert_close(mc, analytic, atol=0.03, rtol=0)


@torch.no_grad()
def test_vhe_scales_the_kl_of_c_by_one_over_context_size():
    """training log-weight = log p(x|z,c) − KL(q(z|x,c)‖p(z|c)) − (1/|D|)·KL(q(c|D)‖p(c)), on the same draws."""
    model = _build("homoencoder")
    x, ctx, _ = _data(n=4)
    torch.manual_seed(3)
    training = model.log_weights(x, ctx, 7, objective="training")
    torch.manual_seed(3)  # replay the draws: c first, then z
    q_c = model.posterior_c(ctx)
    c = q_c.rsample((7,))
    q_z = model.posterior_z(x, c)
    z = q_z.rsample()
    logits = model.decoder(torch.cat([z, c], -1)).view(7, 3, *EVENT)
    expected = (bernoulli_grey_levels(logits, 3).log_prob(x) - kl_divergence(q_z, diagonal_gaussian(model.prior_z(c)))
                - kl_divergence(q_c, standard_normal(3, x)) / 4)
    torch.testing.assert_close(training, expected)
    assert model.c_term_weight(4, "training") == 1 / 4 and model.c_term_weight(4, "marginal") == 1.0


@torch.no_grad()
def test_vampprior_density_matches_direct_mixture_computation():
    model = _build("homoencoder_vampprior")
    c = torch.randn(5, 2, 3, dtype=torch.float64)
    prior = model.prior_c(c)
    comps = model.posterior_c(model.pseudo_sets()).base_dist  # (M, 3)
    per_comp = Normal(comps.loc, comps.scale).log_prob(c.unsqueeze(-2)).sum(-1)  # (5, 2, M)
    direct = torch.logsumexp(per_comp, -1) - math.log(4)
    torch.testing.assert_close(prior.log_prob(c), direct)
    generic = MixtureSameFamily(Categorical(logits=torch.zeros(4, dtype=torch.float64)), Independent(Normal(comps.loc, comps.scale), 1))
    torch.testing.assert_close(prior.log_prob(c), generic.log_prob(c))
    assert model.pseudo_sets().min() >= 0 and model.pseudo_sets().max() <= 1


def test_mixture_normalising_constant_uses_every_dimension():
    d = 300
    mix = DiagonalNormalMixture(torch.zeros(1), torch.zeros(1, d), torch.full((1, d), 0.5))
    expected = -d * math.log(0.5) - 0.5 * d * math.log(2 * math.pi)
    assert abs(mix.log_prob(torch.zeros(d)).item() - expected) < 1e-2
    # a probability density: integrates to 1 in one dimension
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)[:, None]
    one_d = DiagonalNormalMixture(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([[-1.0], [2.0]], dtype=torch.float64),
                                  torch.tensor([[0.5], [1.2]], dtype=torch.float64))
    assert abs(torch.trapezoid(one_d.log_prob(grid).exp(), grid[:, 0]).item() - 1.0) < 1e-6


@pytest.mark.parametrize("name", sorted(MODELS))
def test_iwae_above_elbo_in_expectation_for_every_model(name):
    model = _build(name).eval()
    x, ctx, idx = _data()
    torch.manual_seed(0)
    with torch.no_grad():  # independent draws for the two estimators
        iwae_draws = iwae(model.log_weights(x, ctx, 20 * 400, decoder_index=idx).view(20, 400, 3))  # (400, 3)
        elbo_draws = model.log_weights(x, ctx, 8000, decoder_index=idx)  # (8000, 3)
    gap = iwae_draws.mean(0) - elbo_draws.mean(0)
    stderr = (iwae_draws.var(0) / 400 + elbo_draws.var(0) / 8000).sqrt()
    assert (gap > 3 * stderr).all()


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_representation_of_ns_style_models_is_deterministic_given_the_context_set(name):
    model = _build(name).eval()
    x, ctx, _ = _data()
    torch.manual_seed(1)
    a = model.representation(x, ctx)
    torch.manual_seed(2)
    torch.testing.assert_close(a, model.representation(x, ctx))
    if isinstance(model, NeuralStatistician):
        c = model.posterior_c(model.set_for_c(x, ctx)).mean
        torch.testing.assert_close(a, model.posterior_z(x, c).mean)


# per-distribution validation values of three validations; means −170, −120, −172. The best mean
# (validation 2) is neither the best first distribution (1) nor the best last one (3).
SCRIPT = ([-50, -200, -200, -200, -200], [-120, -120, -120, -120, -120], [-200, -200, -200, -200, -60])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_model_selection_picks_highest_validation_iwae_for_every_model(variant, mnist_root, tmp_path, monkeypatch):
    """The validation metric is scripted (finite values) and the parameters snapshotted at each
    validation: best.pt must hold exactly the parameters at the scripted maximum, last.pt the final ones."""
    scripted = ScriptedValidation(SCRIPT)
    monkeypatch.setattr("metavae.training.trainer.per_distribution_log_likelihood", scripted)
    base = load_config(None, [*TINY, ("train.max_steps", 6), ("train.validate_every", 2), ("train.lr", 5e-3)])
    config = variant_config(base, variant)
    if variant == "homoencoder_vampprior":
        config = with_overrides(config, [("model.num_pseudo_sets", 20)])  # speed only
    run = tmp_path / variant
    train(config, run, mnist_root, progress=False)
    assert len(scripted.snapshots) == 3
    s1, s2, s3 = scripted.snapshots
    assert not same_state(s1, s2) and not same_state(s2, s3)  # the snapshots can be told apart
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert same_state(best["state_dict"], s2) and same_state(last["state_dict"], s3)
    assert (best["step"], best["best"], last["best"]) == (4, {"val_iwae": -120.0, "step": 4}, {"val_iwae": -120.0, "step": 4})


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_iwae_converges_to_exact_log_likelihood_for_every_model(name):
    """With a decoder that ignores its latents, log p(x) = log p(x | bias) exactly, whatever the
    priors and proposals: the marginal log-weights must integrate the latents out."""
    model = _build(name, decoders="per_distribution").eval()
    x, ctx, idx = _data()
    if hasattr(model.decoder, "weights"):  # grouped decoders
        model.decoder.weights[-1].zero_()
        groups = idx if model.decoder.num_groups > 1 else torch.zeros_like(idx)
        logits = model.decoder.biases[-1][groups, 0].view(3, *EVENT)
    else:
        _last_linear(model.decoder).weight.zero_()
        logits = _last_linear(model.decoder).bias.view(*EVENT).expand(3, *EVENT)
    exact = bernoulli_grey_levels(logits, 3).log_prob(x)
    torch.manual_seed(0)
    estimate = log_likelihood(model, x, ctx, 200_000, samples_per_chunk=50_000, decoder_index=idx)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    torch.manual_seed(0)
    assert (elbo(model.log_weights(x, ctx, 2000, decoder_index=idx)) < exact).all()  # the ELBO gap is real


@pytest.mark.parametrize("name", ["metavae", "vae"])
@torch.no_grad()
def test_representation_is_the_posterior_mean(name):
    model = _build(name).eval()
    x, ctx, _ = _data()
    torch.testing.assert_close(model.representation(x, ctx), model.posterior(x, ctx).base_dist.loc)


def test_mixture_log_density_is_accurate_in_float32_with_small_scales():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(50, 300, generator=g)
    scale = torch.full((50, 300), 0.003)
    c = loc[7] + 0.003 * torch.randn(4, 300, generator=g)
    mix = DiagonalNormalMixture(torch.zeros(50), loc, scale)
    direct = torch.logsumexp(Normal(loc.double(), scale.double()).log_prob(c.double().unsqueeze(-2)).sum(-1), -1) - math.log(50)
    assert mix.log_prob(c).dtype == torch.float32
    torch.testing.assert_close(mix.log_prob(c).double(), direct, atol=1e-2, rtol=1e-6)
