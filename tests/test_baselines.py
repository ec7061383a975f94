"""Correctness of the baselines: analytic ELBOs, the VHE's 1/|D|, the VampPrior density, model selection."""

import json
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from conftest import TINY
from metavae.config import load_config
from metavae.evaluation.compare import VARIANTS, variant_config
from metavae.experiment import train
from metavae.models import MODELS, HomoencoderVampPrior, NeuralStatistician, VariationalHomoencoder
from metavae.models.base import bernoulli_grey_levels, diagonal_gaussian, standard_normal
from metavae.models.distributions import DiagonalNormalMixture
from metavae.objectives import elbo, iwae

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


@pytest.mark.parametrize("cls, weight", [(NeuralStatistician, lambda n: 1 / (n + 1)), (VariationalHomoencoder, lambda n: 1 / n)])
@torch.no_grad()
def test_ns_and_vhe_elbo_equals_analytic_value(cls, weight):
    """Make p(z|c), q(z|x,c) and p(x|z,c) ignore the latents' randomness where needed, then
    E[log w] = log p(x) − KL(q(z|x)‖p(z)) − w·KL(q(c|S)‖p(c)), with w = 1 (marginal) or the
    model's set weight (training): 1/(N+1) for NS (S = D ∪ {x}), 1/|D| for the VHE."""
    model = _build(next(k for k, v in MODELS.items() if v is cls))
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
    kl_c = kl_divergence(q_c, standard_normal(3, x))
    for objective, w in (("marginal", 1.0), ("training", weight(5))):
        torch.manual_seed(0)
        mc = elbo(model.log_weights(x, ctx, 200_000, objective=objective))
        analytic = log_px - kl_divergence(q_z, p_z) - w * kl_c
        torch.testing.assert_close(mc, analytic, atol=0.03, rtol=0)


@torch.no_grad()
def test_vhe_scales_the_kl_of_c_by_one_over_context_size():
    model = _build("homoencoder")
    x, ctx, _ = _data(n=4)
    torch.manual_seed(3)
    marginal = model.log_weights(x, ctx, 7, objective="marginal")
    torch.manual_seed(3)
    training = model.log_weights(x, ctx, 7, objective="training")
    torch.manual_seed(3)
    q_c = model.posterior_c(ctx)
    c = q_c.rsample((7,))  # the first draw of log_weights
    c_term = standard_normal(3, x).log_prob(c) - q_c.log_prob(c)
    torch.testing.assert_close(marginal - training, (1 - 1 / 4) * c_term)


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
    with torch.no_grad():
        lw = model.log_weights(x, ctx, 20 * 400, decoder_index=idx).view(400, 20, 3)
    assert (iwae(lw.transpose(0, 1)).mean(0) > elbo(lw.reshape(-1, 3)) + 1e-3).all()


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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_model_selection_picks_highest_validation_iwae_for_every_model(variant, mnist_root, tmp_path):
    base = load_config(None, [*TINY, ("train.max_steps", 6), ("train.validate_every", 2), ("train.lr", 5e-3)])
    config = variant_config(base, variant)
    train(config, tmp_path / variant, mnist_root, progress=False)
    records = [json.loads(line) for line in (tmp_path / variant / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["val_iwae"])
    ckpt = torch.load(tmp_path / variant / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["step"] == best["step"] and ckpt["best"]["val_iwae"] == best["val_iwae"]
    assert all(math.isfinite(r["val_iwae"]) and r["val_iwae"] < 0 for r in records)
