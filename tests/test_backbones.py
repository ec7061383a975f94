"""The conv backbone: shapes from the data, exact log p(x) for every model, batch normalisation that
never mixes a query with its context (or pseudo-sets with images), configs, and a training run.
The MLP/conv contract tests over every model are in test_models.py (``<name>:conv`` cases)."""

import dataclasses

import pytest
import torch

from conftest import TINY
from metavae.config import load_config, with_overrides
from metavae.errors import ConfigError
from metavae.experiments.transformed_images import VARIANTS, train, variant_config
from metavae.models import MODELS
from metavae.models.backbones import Backbone, BackboneConfig
from metavae.models.base import bernoulli_grey_levels
from metavae.nn import ConvDecoder, ConvEncoder, GroupedDecoder
from metavae.objectives import elbo, log_likelihood

EVENT = (1, 6, 6)
CONV = {"backbone": "conv", "conv_channels": [3, 4], "conv_layers_per_stage": 2, "hidden_dim": 12, "summary_dim": 6,
        "summary_hidden": [10], "z_dim": 2, "c_dim": 3, "num_pseudo_sets": 4, "pseudo_set_size": 3, "decoders": "per_distribution"}


def _conv_model(name, event=EVENT, groups=2):
    valid = {f.name for f in dataclasses.fields(MODELS[name].config_class)}
    cfg = load_config(None, [("model.name", name)] + [(f"model.{k}", v) for k, v in CONV.items() if k in valid])
    torch.manual_seed(0)
    return MODELS[name].from_config(cfg.model, event, groups)


@pytest.mark.parametrize("side, features", [(32, 4), (28, 4), (96, 12), (5, 1)])
def test_the_papers_encoder_gives_256_by_4_by_4_on_32_and_28_pixel_images(side, features):
    """Nine conv3×3 (64, 64, 64↓, 128, 128, 128↓, 256, 256, 256↓): each stride-2 conv with padding 1
    maps a side n to ⌊(n − 1)/2⌋ + 1 (32 → 16 → 8 → 4; 28 → 14 → 7 → 4; 96 → 48 → 24 → 12)."""
    encoder = ConvEncoder((1, side, side))
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 64, 128, 128, 128, 256, 256, 256]
    assert [c.stride[0] for c in convs] == [1, 1, 2] * 3 and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.modules()) == 9
    assert encoder.output_shape == (256, features, features)
    assert encoder(torch.rand(2, 1, side, side)).shape == (2, 256 * features * features)


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 28, 28), (3, 27, 20), (1, 9, 9)])
def test_the_decoder_produces_exactly_the_image_shape(shape):
    decoder = ConvDecoder(7, shape, (8, 6, 4))
    out = decoder(torch.randn(3, 5, 7))  # leading axes (K, B) kept
    assert out.shape == (3, 5, shape[0] * shape[1] * shape[2])
    deconvs = [m for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [6, 4, shape[0]]


def test_the_grouped_decoder_sends_each_row_through_its_own_decoder():
    torch.manual_seed(0)
    grouped = GroupedDecoder(3, lambda: ConvDecoder(4, (1, 6, 6), (4, 3))).eval()
    h, group = torch.randn(7, 4), torch.tensor([2, 0, 2, 1, 0, 2, 1])
    out = grouped(h, group)
    for g in range(3):
        rows = group == g
        torch.testing.assert_close(out[rows], grouped.decoders[g](h[rows]))


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_iwae_converges_to_the_exact_log_likelihood_with_the_conv_backbone(name):
    """With the last transposed conv's weights at zero, every pixel's logit is that decoder's output
    bias: log p(x) = Σ_pixels log Bernoulli(x; bias) exactly, whatever the latents. The marginal
    log-weights must integrate them out (eval mode: running batch-norm statistics)."""
    model = _conv_model(name).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, *EVENT, generator=g, dtype=torch.float64)
    ctx = torch.rand(3, 4, *EVENT, generator=g, dtype=torch.float64)
    idx = torch.tensor([0, 1, 0])
    decoders = model.decoder.decoders if isinstance(model.decoder, GroupedDecoder) else [model.decoder]
    for d in decoders:
        d.net[-1].weight.zero_()
        d.net[-1].bias.fill_(0.3 - 0.8 * len(decoders) * (d is decoders[-1]))  # decoders tell apart
    bias = torch.stack([d.net[-1].bias[0] for d in decoders])
    groups = idx if len(decoders) > 1 else torch.zeros_like(idx)
    exact = bernoulli_grey_levels(bias[groups].view(3, 1, 1, 1).expand(3, *EVENT), 3).log_prob(x)
    torch.manual_seed(0)
    estimate = log_likelihood(model, x, ctx, 100_000, samples_per_chunk=25_000, decoder_index=idx)
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)
    torch.manual_seed(0)
    assert (elbo(model.log_weights(x, ctx, 1000, decoder_index=idx)) < exact).all()  # the ELBO gap is real


@pytest.mark.parametrize("name", ["metavae", "neural_statistician", "homoencoder", "homoencoder_vampprior"])
def test_one_conv_encoder_is_shared_by_the_query_and_the_context(name):
    model = _conv_model(name)
    element_net = (model.summary if name == "metavae" else model.statistic).element_net
    assert isinstance(model.x_encoder, ConvEncoder) and element_net[0] is model.x_encoder
    assert sum(isinstance(m, ConvEncoder) for m in model.modules()) == 1  # modules() lists a shared one once


@pytest.mark.parametrize("name", ["metavae", "neural_statistician", "homoencoder", "homoencoder_vampprior"])
def test_in_training_a_querys_batch_statistics_never_include_its_context(name):
    """Training mode: the queries pass the conv encoder in calls of their own (for the Neural
    Statistician also inside the set D ∪ {x}), the context pool in another, so the queries' normalised
    features do not change when only the context changes."""
    model = _conv_model(name).train()
    seen = []
    model.x_encoder.register_forward_hook(lambda module, args, out: seen.append((args[0].shape[0], out.detach().clone())))
    x = torch.rand(4, *EVENT)
    for seed in (1, 2):
        ctx = torch.rand(4, 5, *EVENT, generator=torch.Generator().manual_seed(seed))
        model.log_weights(x, ctx, 1, decoder_index=torch.tensor([0, 1, 0, 1]))
    query_calls = [out for rows, out in seen if rows == 4]
    context_calls = [out for rows, out in seen if rows == 20]
    assert len(context_calls) == 2 and len(query_calls) == 2 * (2 if name == "neural_statistician" else 1)
    for a, b in zip(query_calls[: len(query_calls) // 2], query_calls[len(query_calls) // 2 :]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(context_calls[0], context_calls[1])


def test_the_vampprior_pseudo_sets_never_touch_the_running_statistics_of_images():
    model = _conv_model("homoencoder_vampprior").train()
    norms = [m for m in model.statistic.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    prior_train = model.prior_c(torch.zeros(1))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))  # pseudo-images not counted
    assert all(m.training for m in norms)  # the modes are restored
    prior_eval = model.eval().prior_c(torch.zeros(1))
    torch.testing.assert_close(prior_train.component_distribution.base_dist.loc,
                               prior_eval.component_distribution.base_dist.loc, rtol=0, atol=0)
    model.train().log_weights(torch.rand(2, *EVENT), torch.rand(2, 3, *EVENT), 1)  # a data batch does move them
    assert not all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))


def test_backbone_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.backbone"):
        load_config(None, [("model.backbone", "resnet")])
    with pytest.raises(ConfigError, match="model.conv_channels"):
        load_config(None, [("model.backbone", "conv"), ("model.conv_channels", [])])
    with pytest.raises(ConfigError, match="model.conv_layers_per_stage"):
        load_config(None, [("model.conv_layers_per_stage", 0)])
    with pytest.raises(ValueError, match="images"):
        Backbone(BackboneConfig(backbone="conv"), (20,))


def test_the_mlp_backbone_keeps_the_papers_mnist_sizes():
    model = MODELS["metavae"].from_config(load_config(None).model, (1, 28, 28), 9)
    assert sum(p.numel() for p in model.parameters()) == (
        (784 * 784 + 784) + (784 * 400 + 400) + (400 * 400 + 400)  # summary 784 → 784 → 400 → 400
        + ((784 + 400) * 400 + 400) + (400 * 400 + 400) + (400 * 80 + 80)  # inference (784+400) → 400 → 400 → 80
        + 9 * ((40 * 400 + 400) + (400 * 400 + 400) + (400 * 784 + 784)))  # 9 decoders 40 → 400 → 400 → 784
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_every_model_trains_with_the_conv_backbone_through_the_config(mnist_root, tmp_path):
    base = load_config(None, [*TINY, ("model.backbone", "conv"), ("model.conv_channels", [4, 4]),
                              ("model.conv_layers_per_stage", 1), ("train.max_steps", 2), ("train.validate_every", 2)])
    for name in sorted(VARIANTS):
        config = variant_config(base, name)
        if name == "homoencoder_vampprior":
            config = with_overrides(config, [("model.num_pseudo_sets", 5)])  # speed only
        assert config.model.backbone == "conv" and config.model.conv_channels == (4, 4)
        result = train(config, tmp_path / name, mnist_root, progress=False)
        assert result.step == 2 and torch.isfinite(torch.tensor(result.best_val))
        state = torch.load(tmp_path / name / "checkpoints" / "best.pt", weights_only=True)["state_dict"]
        assert any(k.endswith("running_var") for k in state)  # batch-norm statistics are checkpointed


@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_in_eval_mode_an_examples_encoding_and_decoding_do_not_depend_on_its_batch(name):
    """Eval mode (running statistics, set to non-trivial values): a query's code alone equals its
    row in a batch of three, and a decoder's output for one latent alone equals its row in a batch."""
    model = _conv_model(name).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    g = torch.Generator().manual_seed(3)
    x, ctx = torch.rand(3, *EVENT, generator=g), torch.rand(3, 4, *EVENT, generator=g)
    torch.testing.assert_close(model.representation(x[1:2], ctx[1:2]), model.representation(x, ctx)[1:2])
    decoders = model.decoder.decoders if isinstance(model.decoder, GroupedDecoder) else [model.decoder]
    h = torch.randn(3, decoders[0].in_features, generator=g)
    torch.testing.assert_close(decoders[0](h)[1:2], decoders[0](h[1:2]))
    model.train()  # in training the same rows are normalised by their batch: the check above can fail
    assert not torch.allclose(decoders[0](h)[1:2], decoders[0](h[1:2].expand(2, -1))[0:1])
