"""Parameter-free decoders: the family's own likelihood behind the model seam, and the models of the
sufficient-statistics experiment built on them."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from metavae.data import expfam
from metavae.data.dataset_family import DatasetFamily
from metavae.models.family_decoder import FamilyDecoder, sufficient_statistic_model


def test_a_family_decoder_has_no_parameters_and_is_each_querys_family_likelihood():
    decoder = FamilyDecoder(["gaussian", "exponential", "gaussian"])
    assert sum(p.numel() for p in decoder.parameters()) == 0 and len(list(decoder.parameters())) == 0
    x = torch.cat([expfam.sample("gaussian", [1.0], 2, 20, 0)[0], expfam.sample("exponential", [2.0], 2, 20, 1)[0]]).double()
    z = torch.randn(3, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = decoder.log_prob(x, z, torch.tensor([0, 2, 1, 1]))
    families = ["gaussian", "gaussian", "exponential", "exponential"]
    for k in range(3):
        for b in range(4):
            theta = expfam.link(families[b], z[k, b])
            if families[b] == "gaussian":
                expected = sum(stats.norm.logpdf(x[b, :, d].numpy(), float(theta[d]), math.sqrt(0.1)).sum() for d in range(2))
            else:
                expected = sum(stats.expon.logpdf(x[b, :, d].numpy(), scale=1 / float(theta[d])).sum() for d in range(2))
            assert float(out[k, b]) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="families: expected names among"):
        FamilyDecoder(["normal"])


@pytest.mark.parametrize("linear_path", [False, True])
@pytest.mark.parametrize("kind", ["metavae", "vae"])
def test_the_models_decode_with_no_parameters_and_satisfy_the_seam(kind, linear_path):
    torch.manual_seed(0)
    model = sufficient_statistic_model(kind, ["gaussian", "lognormal", "exponential"], linear_path=linear_path)
    assert sum(p.numel() for p in model.decoder.parameters()) == 0  # the decoder has none
    assert model.num_decoders == 3 and model.event_shape == (20, 2)
    x = torch.cat([expfam.sample(f, [t], 4, 20, i)[0] for i, (f, t) in enumerate((("gaussian", 0.5), ("lognormal", 0.2),
                                                                                     ("exponential", 1.5)))])
    context = x[torch.randint(0, 12, (12, 10), generator=torch.Generator().manual_seed(1))]
    index = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    w = model.log_weights(x, context if model.uses_context else None, 5, decoder_index=index)
    assert w.shape == (5, 12) and bool(torch.isfinite(w).all())
    (-w.mean()).backward()  # gradients reach the encoder only
    assert all(p.grad is not None for p in model.parameters())
    kl = model.kl(x, context if model.uses_context else None, decoder_index=index)
    assert set(kl) == {"z"} and kl["z"].shape == (12,)


def test_a_short_run_learns_the_gaussian_mean_from_the_data():
    """Through the one Trainer on a DatasetFamily of five Gaussian distributions: after 300 steps
    the posterior mean of θ is within 0.1 of the truth on average (untrained: off by ~the mean's size)."""
    import tempfile

    from metavae.config import TrainConfig
    from metavae.training.trainer import Trainer

    thetas = [-4.0, -2.0, 0.0, 2.0, 4.0]
    train = [expfam.sample("gaussian", [t], 200, 20, seed=i)[0] for i, t in enumerate(thetas)]
    task = DatasetFamily(train, names=[f"gaussian:{t:g}" for t in thetas], context_size=5, value_range=None)
    torch.manual_seed(0)
    model = sufficient_statistic_model("metavae", ["gaussian"] * 5, hidden_dim=32, summary_dim=16)
    config = TrainConfig(lr=3e-3, batch_size=20, epochs=100, max_steps=300, context_pool_size=20, validate_every=300,
                         val_examples=10, val_importance_samples=2, val_pool_size=10, device="cpu")
    with tempfile.TemporaryDirectory() as run:
        Trainer(model, task, config, run).fit(progress=False)
    x = expfam.sample("gaussian", [1.0], 50, 20, seed=99)[0]  # a mean between the trained ones
    context = expfam.sample("gaussian", [1.0], 50, 20, seed=98)[0][torch.randint(0, 50, (50, 5))]
    error = (model.representation(x, context) - 1.0).abs().mean()
    assert float(error) < 0.1, float(error)


def test_the_linear_path_continues_linearly_beyond_the_data():
    """The extrapolating encoder carries each observation's mean point straight to a linear output: with
    the MLP's output and the linear path's weights on the learnt features set to zero, shifting every
    point by δ moves the posterior mean by exactly W·δ, however far (here ±40, far beyond any data)."""
    torch.manual_seed(0)
    model = sufficient_statistic_model("vae", ["gaussian"], hidden_dim=16, linear_path=True)
    with torch.no_grad():
        model.inference_net.mlp[-1].weight.zero_()
        model.inference_net.mlp[-1].bias.zero_()
        model.inference_net.linear.weight[:, 2:] = 0.0  # only the mean point (the first two features) remains
    means = torch.tensor([-40.0, -20.0, 0.0, 20.0, 40.0])
    x = means[:, None, None] + expfam.sample("gaussian", [0.0], 1, 20, 0)[0]  # the same points, shifted
    loc = model.representation(x, None)  # (5, 2)
    w = model.inference_net.linear.weight[:2, :2]  # loc rows of the linear map, on the mean point
    expected = loc[2] + (means[:, None] * w.sum(1)[None, :])  # a shift δ on both coordinates: W·(δ, δ)
    assert torch.allclose(loc, expected, atol=1e-4)
