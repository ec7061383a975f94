"""Contract tests over every registered model."""

import dataclasses
import io

import pytest
import torch

from metavae.config import load_config
from metavae.data.context import Context
from metavae.models import MODELS
from metavae.objectives import elbo, log_likelihood

EVENT = (1, 6, 6)
D = 3


TINY_SIZES = {"hidden_dim": 16, "summary_dim": 8, "summary_hidden": [12], "z_dim": 3, "c_dim": 5,
              "num_pseudo_sets": 3, "pseudo_set_size": 2, "decoders": "per_distribution"}
TINY_CONV = {"backbone": "conv", "conv_channels": [3, 4], "conv_layers_per_stage": 2}  # 6×6 → 3×3 → 2×2

#: every registered model with the MLP backbone, and with the conv backbone as ``<name>:conv``
CASES = [*sorted(MODELS), *(f"{name}:conv" for name in sorted(MODELS))]


def _tiny_config(case):
    name, _, backbone = case.partition(":")
    valid = {f.name for f in dataclasses.fields(MODELS[name].config_class)}
    sizes = {**TINY_SIZES, **(TINY_CONV if backbone == "conv" else {})}
    return load_config(None, [("model.name", name)] + [(f"model.{k}", v) for k, v in sizes.items() if k in valid]).model


def _model(case, seed=0):
    torch.manual_seed(seed)
    return MODELS[case.partition(":")[0]].from_config(_tiny_config(case), EVENT, D)


def _last_linear(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def _data(b=5, n=4):
    x = torch.rand(b, *EVENT)
    context = torch.rand(b, n, *EVENT)
    index = torch.arange(b) % D
    return x, context, index


@pytest.mark.parametrize("name", CASES)
def test_log_weights_shape_finite_and_gradients_reach_every_parameter(name):
    model = _model(name)
    x, context, index = _data()
    log_w = model.log_weights(x, context, num_samples=7, decoder_index=index)
    assert log_w.shape == (7, 5) and torch.isfinite(log_w).all()
    loss = -elbo(log_w).mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", CASES)
@torch.no_grad()
def test_representation_is_deterministic_posterior_mean(name):
    """``representation`` is the mean of the z that ``log_weights`` samples (captured where it enters
    the decoder), estimated from K draws.

    For models with a set latent c the representation is the mean of q(z | x, c) at c = the mean of
    q(c | S), so q(c | S) is made nearly deterministic first (log-variance −30: σ_c = e^−15 ≈ 3e−7).
    q(z | ·) is narrowed to σ_z = e^−8 ≈ 3.4e−4 (log-variance −16; its mean is left as it is) so the
    Monte Carlo tolerance is small next to what the context or c contributes to the mean (≳ 1e−4
    here, e.g. whether the query is in the NS set); float64 keeps rounding far below it.

    Tolerance: the sample mean of K i.i.d. draws has standard error s/√K per coordinate (s the
    sample standard deviation, ≈ σ_z); 5 standard errors (≈ 1.2e−5) over 5×z_dim = 15 coordinates
    leaves a false-alarm probability below 1e−5 (and the seed is fixed). c's residual noise moves
    z by ~1e−7, far below it.
    """
    model = _model(name).double().eval()
    x, context, index = _data()
    x, context = x.double(), context.double()
    z_head = _last_linear(model.encoder_z if hasattr(model, "encoder_z") else model.inference_net)  # → (loc, log σ²) of z
    z_dim = z_head.out_features // 2
    z_head.weight[z_dim:] = 0.0
    z_head.bias[z_dim:] = -16.0
    if hasattr(model, "c_head"):
        c_head = model.c_head[-1]  # Linear → (loc, log σ²) of q(c | S)
        c_dim = c_head.out_features // 2
        c_head.weight[c_dim:] = 0.0
        c_head.bias[c_dim:] = -30.0
    captured = []
    hook = model.decoder.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().clone()))
    k = 20_000
    torch.manual_seed(0)
    model.log_weights(x, context, k, decoder_index=index)
    hook.remove()
    code = model.representation(x, context)
    assert code.shape == (5, z_dim) and len(captured) == 1
    z = captured[0].reshape(k, 5, -1)[..., :z_dim]  # decoder input: z (then c, for the NS family)
    stderr = z.std(0) / k**0.5
    assert ((stderr > 1e-7) & (stderr < 1e-5)).all()  # z is still sampled, with σ_z ≈ e^−8
    assert ((z.mean(0) - code).abs() <= 5 * stderr).all(), (z.mean(0) - code).abs().max()
    torch.testing.assert_close(model.representation(x, context), code, rtol=0, atol=0)  # deterministic


@pytest.mark.parametrize("name", CASES)
def test_variable_context_size_and_permutation_invariance(name):
    model = _model(name).eval()
    x, context, index = _data(n=6)
    for n in (1, 3, 6):
        torch.manual_seed(1)
        assert model.log_weights(x, context[:, :n], 2, decoder_index=index).shape == (2, 5)
    perm = torch.tensor([5, 3, 1, 0, 2, 4])
    torch.testing.assert_close(model.representation(x, context), model.representation(x, context[:, perm]))
    torch.manual_seed(2)
    a = model.log_weights(x, context, 3, decoder_index=index)
    torch.manual_seed(2)
    b = model.log_weights(x, context[:, perm], 3, decoder_index=index)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", CASES)
def test_shared_pool_context_gives_same_result_as_dense(name):
    model = _model(name).eval()
    x, context, index = _data(n=4)
    pooled = Context(context.reshape(20, *EVENT), torch.arange(20).view(5, 4))
    torch.testing.assert_close(model.representation(x, context), model.representation(x, pooled))


@pytest.mark.parametrize("name", CASES)
def test_example_result_independent_of_batch_it_sits_in(name):
    model = _model(name).eval()
    x, context, index = _data(b=6)
    full = model.representation(x, context)
    torch.testing.assert_close(full[2:3], model.representation(x[2:3], context[2:3]))


@pytest.mark.parametrize("name", CASES)
def test_save_load_round_trip(name):
    model = _model(name).eval()
    x, context, index = _data()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = _model(name, seed=5)
    other.load_state_dict(torch.load(buf, weights_only=True))
    torch.manual_seed(9)
    a = model.log_weights(x, context, 4, decoder_index=index)
    torch.manual_seed(9)
    b = other.eval().log_weights(x, context, 4, decoder_index=index)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", CASES)
def test_log_likelihood_with_one_sample_equals_the_elbo_sample(name):
    model = _model(name).eval()
    x, context, index = _data()
    torch.manual_seed(4)
    one = log_likelihood(model, x, context, 1, decoder_index=index)
    torch.manual_seed(4)
    torch.testing.assert_close(one, elbo(model.log_weights(x, context, 1, decoder_index=index)))


def test_metavae_uses_the_decoder_of_each_example():
    model = _model("metavae").eval()
    x, context, _ = _data()
    with torch.no_grad():
        model.decoder.biases[-1][1].fill_(50.0)  # decoder 1 predicts all-ones with certainty
    ones = torch.ones(5, *EVENT)
    torch.manual_seed(0)
    lw1 = model.log_weights(ones, context, 1, decoder_index=torch.ones(5, dtype=torch.long))
    torch.manual_seed(0)
    lw0 = model.log_weights(ones, context, 1, decoder_index=torch.zeros(5, dtype=torch.long))
    assert (lw1 > lw0 + 10).all()
    with pytest.raises(ValueError, match="decoder_index"):
        model.log_weights(x, context, 1)


def test_metavae_log_weights_match_hand_computation():
    """log w = log Bern(x | dec(z)) + log N(z; 0, I) − log N(z; μ, σ²), with z the drawn sample."""
    model = _model("metavae").eval()
    x, context, index = _data(b=2)
    torch.manual_seed(4)
    log_w = model.log_weights(x, context, 1, decoder_index=index)[0]
    torch.manual_seed(4)
    q = model.posterior(x, context)
    z = q.rsample()
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    logits = model.decoder(z, index).view(2, -1)
    xf = x.view(2, -1)
    log_px = (xf * torch.nn.functional.logsigmoid(logits) + (1 - xf) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    log_q = (-0.5 * ((z - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * torch.log(torch.tensor(2 * torch.pi))).sum(-1)
    torch.testing.assert_close(log_w, log_px + log_pz - log_q, atol=1e-4, rtol=1e-5)


def test_diagonal_gaussian_scale_is_exp_half_logvar():
    """(loc, log σ²) → scale σ = exp(½ log σ²), not ½·exp(log σ²) (a 2020 mistake)."""
    from metavae.models.base import diagonal_gaussian

    params = torch.tensor([[1.0, -2.0, torch.log(torch.tensor(4.0)), torch.log(torch.tensor(0.25))]])
    q = diagonal_gaussian(params)
    torch.testing.assert_close(q.base_dist.loc, torch.tensor([[1.0, -2.0]]))
    torch.testing.assert_close(q.base_dist.scale, torch.tensor([[2.0, 0.5]]))
    torch.testing.assert_close(q.variance, torch.tensor([[4.0, 0.25]]))
