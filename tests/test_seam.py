"""The seam every model shares: argument validation, the ``kl`` accessor, ``representation`` semantics.

Expected values are computed here from the formulas (closed-form Gaussian KLs, Bernoulli
log-likelihoods, mixture densities), not by calling the library's own KL or density code.
"""

import dataclasses
import math
import re

import pytest
import torch
import torch.nn.functional as F

from metavae.data.context import Context
from metavae.models import MODELS

EVENT = (1, 4, 4)
NUM_DISTRIBUTIONS = 3
B, N = 3, 5
SIZES = {"hidden_dim": 12, "summary_dim": 6, "summary_hidden": (10,), "z_dim": 2, "c_dim": 3,
         "num_pseudo_sets": 4, "pseudo_set_size": 3}

# variant → (registry name, config overrides); the VAE twice: one shared decoder, one per distribution
VARIANTS = {
    "metavae": ("metavae", {}),
    "neural_statistician": ("neural_statistician", {}),
    "homoencoder": ("homoencoder", {}),
    "homoencoder_vampprior": ("homoencoder_vampprior", {}),
    "vae_shared": ("vae", {"decoders": "shared"}),
    "vae_per_distribution": ("vae", {"decoders": "per_distribution"}),
}
NEEDS_CONTEXT = ["metavae", "neural_statistician", "homoencoder", "homoencoder_vampprior"]
MULTI_DECODER = ["metavae", "vae_per_distribution"]
SINGLE_DECODER = [v for v in VARIANTS if v not in MULTI_DECODER]
NS_FAMILY = ["neural_statistician", "homoencoder", "homoencoder_vampprior"]
VAE_FAMILY = ["metavae", "vae_shared", "vae_per_distribution"]
ALL = sorted(VARIANTS)
METHODS = ["log_weights", "kl", "representation"]  # all validate x and the context
SAMPLING = ["log_weights", "kl"]  # these also take num_samples and decoder_index


#: the identities below also hold with the conv backbone (``<variant>:conv``, built in eval mode: its
#: batch norm then uses running statistics, and 1×1 feature maps of a single row are allowed)
CONV = {"backbone": "conv", "conv_channels": (3, 4), "conv_layers_per_stage": 2}
ALL_BACKBONES = [*ALL, *(f"{v}:conv" for v in ALL)]


def _last_linear(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def _build(variant):
    variant, _, backbone = variant.partition(":")
    name, extra = VARIANTS[variant]
    cls = MODELS[name]
    valid = {f.name for f in dataclasses.fields(cls.config_class)}
    sizes = {**SIZES, **extra, **(CONV if backbone == "conv" else {})}
    config = cls.config_class(**{k: v for k, v in sizes.items() if k in valid})
    torch.manual_seed(0)
    model = cls.from_config(config, EVENT, NUM_DISTRIBUTIONS).double()
    if backbone == "conv":
        model.eval()
    with torch.no_grad():  # move the posteriors away from the priors (at initialisation all KLs are ≈ 0)
        heads = ([_last_linear(model.inference_net)] if hasattr(model, "inference_net")
                 else [_last_linear(model.encoder_z), model.c_head[-1]])
        for head in heads:  # Linear → (loc, log σ²)
            d = head.out_features // 2
            head.weight.mul_(10.0)
            head.bias[:d] += 1.0
            head.bias[d:] -= 1.0
        if hasattr(model, "pseudo_logits"):  # pseudo-images brighter than the data: q(c|D) far from the VampPrior
            model.pseudo_logits.add_(5.0)
    return model


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, *EVENT, generator=g, dtype=torch.float64)
    context = torch.rand(B, N, *EVENT, generator=g, dtype=torch.float64)
    return x, context, torch.tensor([0, 1, 2])


def _pooled(context):
    """The same sets as a Context over B·N shared elements."""
    return Context(context.reshape(B * N, *EVENT), torch.arange(B * N).view(B, N))


def _call(model, method, x, context, **kwargs):
    if method == "representation":
        return model.representation(x, context)
    return getattr(model, method)(x, context, **kwargs)


def _refused(model, method, message, x, context, exact=True, **kwargs):
    """``method`` raises ValueError with ``message`` (the whole message if ``exact``) before any
    submodule runs."""
    ran = []
    hooks = [m.register_forward_pre_hook(lambda module, args: ran.append(module)) for m in model.modules()]
    try:
        pattern = "^" + re.escape(message) + "$" if exact else re.escape(message)
        with pytest.raises(ValueError, match=pattern):
            _call(model, method, x, context, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    assert ran == [], "the model computed before validating"


def test_variants_cover_the_registry():
    assert {name for name, _ in VARIANTS.values()} == set(MODELS)


# ====================================================================== validation: x
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_x_not_a_tensor_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, "x: expected a floating-point tensor of shape (B, 1, 4, 4), got list",
             x.tolist(), context, decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_x_not_floating_point_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, "x: expected a floating-point tensor, got torch.int64", (x * 2).long(), context,
             decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("shape", [(B, 16), (1, 4, 4), (B, 1, 1, 4, 4),  # wrong number of axes
                                   (B, 1, 4, 5), (B, 2, 4, 4), (B, 4, 4, 1)])  # wrong event shape
def test_x_of_wrong_shape_is_refused(variant, method, shape):
    model = _build(variant)
    _, context, index = _data()
    got = "(" + ", ".join(map(str, shape)) + ")"
    _refused(model, method, f"x: expected shape (B, 1, 4, 4), got {got}", torch.rand(shape, dtype=torch.float64),
             context, decoder_index=index)


# ====================================================================== validation: context
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", NEEDS_CONTEXT)
def test_missing_context_is_refused_by_models_that_infer_from_it(variant, method):
    model = _build(variant)
    x, _, index = _data()
    name = type(model).__name__
    _refused(model, method, f"context: expected a context set (B, N, 1, 4, 4) or a Context ({name} infers its latents "
             "from it), got None", x, None, decoder_index=index)


@pytest.mark.parametrize("variant", ["vae_shared", "vae_per_distribution"])
def test_the_vae_accepts_no_context_and_ignores_a_given_one(variant):
    model = _build(variant)
    x, context, index = _data()
    torch.manual_seed(3)
    without = model.log_weights(x, None, 4, decoder_index=index)
    torch.manual_seed(3)
    with_context = model.log_weights(x, context, 4, decoder_index=index)
    torch.testing.assert_close(without, with_context, rtol=0, atol=0)
    torch.testing.assert_close(model.representation(x, None), model.representation(x, context), rtol=0, atol=0)
    torch.manual_seed(3)
    assert model.kl(x, None, 2, decoder_index=index)["z"].shape == (B,)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_context_of_another_type_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, "context: expected a tensor of shape (B, N, 1, 4, 4) or a Context, got list", x,
             context.tolist(), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_dense_context_not_floating_point_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, "context: expected a floating-point tensor, got torch.int64", x, (context * 2).long(),
             decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("shape", [(B, N, 16), (B, 1, 4, 4), (B, N, 1, 1, 4, 4)])
def test_dense_context_of_wrong_ndim_is_refused(variant, method, shape):
    model = _build(variant)
    x, _, index = _data()
    got = "(" + ", ".join(map(str, shape)) + ")"
    _refused(model, method, f"context: expected shape (B, N, 1, 4, 4), got {got}", x,
             torch.rand(shape, dtype=torch.float64), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_dense_context_of_wrong_event_shape_is_refused(variant, method):
    model = _build(variant)
    x, _, index = _data()
    _refused(model, method, f"context: expected shape (B, N, 1, 4, 4), got ({B}, {N}, 1, 5, 4)", x,
             torch.rand(B, N, 1, 5, 4, dtype=torch.float64), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_empty_dense_context_sets_are_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, f"context: expected at least one element per set (N ≥ 1), got N = 0 in shape ({B}, 0, 1, 4, 4)",
             x, context[:, :0], decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("num_sets", [B - 1, B + 1])
def test_dense_context_with_another_number_of_sets_is_refused(variant, method, num_sets):
    model = _build(variant)
    x, _, index = _data()
    _refused(model, method, f"context: expected {B} sets (one per query in x), got {num_sets}", x,
             torch.rand(num_sets, N, *EVENT, dtype=torch.float64), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_context_elements_of_wrong_event_shape_are_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    bad = Context(context.reshape(B * N, 16), torch.arange(B * N).view(B, N))
    _refused(model, method, f"context.elements: expected shape (P, 1, 4, 4), got ({B * N}, 16)", x, bad,
             decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_context_index_not_integer_is_refused(variant, method, dtype):
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    bad = Context(pooled.elements, pooled.index.to(dtype))
    _refused(model, method, f"context.index: expected an integer tensor, got {dtype}", x, bad, decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_context_index_not_two_dimensional_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    bad = Context(pooled.elements, pooled.index.reshape(-1))
    _refused(model, method, f"context.index: expected shape (B, N), got ({B * N},)", x, bad, decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_context_index_with_another_number_of_sets_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    _refused(model, method, f"context: expected {B} sets (one per query in x), got {B - 1}", x,
             Context(pooled.elements, pooled.index[1:]), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_context_index_with_empty_sets_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    _refused(model, method, f"context.index: expected at least one element per set (N ≥ 1), got N = 0 in shape ({B}, 0)", x,
             Context(pooled.elements, pooled.index[:, :0]), decoder_index=index)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("value, got", [(B * N, f"max {B * N}"), (-1, "min -1")])
def test_context_index_outside_the_elements_is_refused(variant, method, value, got):
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    bad_index = pooled.index.clone()
    bad_index[1, 2] = value
    _refused(model, method, f"context.index: expected values in [0, {B * N}) (context.elements has {B * N} rows), got {got}",
             x, Context(pooled.elements, bad_index), decoder_index=index)


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_context_index_of_any_integer_dtype_selects_the_same_rows(variant, dtype):
    """A uint8 index must not be read as a mask, nor int16 be refused by indexing."""
    model = _build(variant)
    x, context, index = _data()
    pooled = _pooled(context)
    narrow = Context(pooled.elements, pooled.index.to(dtype))
    torch.manual_seed(5)
    expected = model.log_weights(x, pooled, 2, decoder_index=index)
    torch.manual_seed(5)
    torch.testing.assert_close(model.log_weights(x, narrow, 2, decoder_index=index.to(dtype)), expected, rtol=0, atol=0)
    torch.testing.assert_close(model.representation(x, narrow), model.representation(x, pooled), rtol=0, atol=0)


# ====================================================================== validation: decoder_index
@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", ALL)
def test_decoder_index_not_a_tensor_is_refused(variant, method):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, f"decoder_index: expected an integer tensor of shape (B,) = ({B},), got list", x, context,
             decoder_index=index.tolist())


@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_decoder_index_not_integer_is_refused(variant, method, dtype):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, f"decoder_index: expected an integer tensor, got {dtype}", x, context,
             decoder_index=index.to(dtype))


@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("shape", [(B, 1), (B + 1,), ()])
def test_decoder_index_of_wrong_shape_is_refused(variant, method, shape):
    model = _build(variant)
    x, context, _ = _data()
    got = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
    _refused(model, method, f"decoder_index: expected shape (B,) = ({B},) (one per query in x), got {got}", x, context,
             decoder_index=torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", MULTI_DECODER)
@pytest.mark.parametrize("values, got", [([0, 7, 1], "max 7"), ([0, NUM_DISTRIBUTIONS, 1], f"max {NUM_DISTRIBUTIONS}"),
                                         ([-1, 2, 1], "min -1"), ([-2, 9, 0], "min -2 and max 9")])
def test_decoder_index_out_of_range_is_refused_by_multi_decoder_models(variant, method, values, got):
    model = _build(variant)
    x, context, _ = _data()
    _refused(model, method, f"decoder_index: expected values in [0, {NUM_DISTRIBUTIONS}) (this model has "
             f"{NUM_DISTRIBUTIONS} decoders), got {got}", x, context, decoder_index=torch.tensor(values))


@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", MULTI_DECODER)
def test_missing_decoder_index_is_refused_by_multi_decoder_models(variant, method):
    model = _build(variant)
    x, context, _ = _data()
    _refused(model, method, f"decoder_index: expected an integer tensor of shape (B,) = ({B},) (required: this model has "
             f"{NUM_DISTRIBUTIONS} decoders, one per training distribution), got None", x, context)


@pytest.mark.parametrize("variant", SINGLE_DECODER)
def test_single_decoder_models_accept_any_or_no_decoder_index_of_the_right_shape(variant):
    """The trainer passes distribution indices to every model; one decoder ignores their values."""
    model = _build(variant)
    x, context, _ = _data()
    torch.manual_seed(2)
    reference = model.log_weights(x, context, 3)
    for index in (torch.tensor([0, 7, 99]), torch.tensor([-5, 0, 1], dtype=torch.int32)):
        torch.manual_seed(2)
        torch.testing.assert_close(model.log_weights(x, context, 3, decoder_index=index), reference, rtol=0, atol=0)


# ====================================================================== validation: num_samples, objective
@pytest.mark.parametrize("method", SAMPLING)
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("value, got", [(0, "0"), (-3, "-3"), (True, "True (bool)"), (2.0, "2.0 (float)"),
                                        (torch.tensor(2), "tensor(2) (Tensor)")])
def test_num_samples_other_than_a_positive_int_is_refused(variant, method, value, got):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, f"num_samples: expected a Python int ≥ 1, got {got}", x, context, num_samples=value,
             decoder_index=index)


@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("value", ["train", "elbo", None])
def test_unknown_objective_is_refused(variant, value):
    model = _build(variant)
    x, context, index = _data()
    _refused(model, "log_weights", f"objective: expected one of 'marginal', 'training', got {value!r}", x, context,
             decoder_index=index, objective=value)


@pytest.mark.parametrize("variant", ALL)
def test_well_formed_inputs_of_both_context_layouts_are_accepted(variant):
    model = _build(variant)
    x, context, index = _data()
    for ctx in (context, _pooled(context)):
        for objective in ("marginal", "training"):
            assert model.log_weights(x, ctx, 2, decoder_index=index, objective=objective).shape == (2, B)
        assert model.representation(x, ctx).shape == (B, SIZES["z_dim"])


# ====================================================================== kl
def _gaussian_kl(loc_q, scale_q, loc_p, scale_p):
    """KL(N(μq, σq²) ‖ N(μp, σp²)) summed over the last axis: Σ log(σp/σq) + (σq² + (μq−μp)²)/(2σp²) − ½."""
    return (torch.log(scale_p / scale_q) + (scale_q**2 + (loc_q - loc_p) ** 2) / (2 * scale_p**2) - 0.5).sum(-1)


def _standard_normal_kl(loc, scale):
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)."""
    return 0.5 * (loc**2 + scale**2 - 1 - torch.log(scale**2)).sum(-1)


def _log_normal(value, loc, scale):
    """Σ_d log N(value_d; μ_d, σ_d)."""
    return (-0.5 * ((value - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _set_for_c(variant, x, context):
    """S = D ∪ {x} for the Neural Statistician, D for the homoencoders, as a dense (B, |S|, *event) set."""
    return torch.cat([context, x.unsqueeze(1)], dim=1) if variant == "neural_statistician" else context


@pytest.mark.parametrize("variant", ALL_BACKBONES)
@pytest.mark.parametrize("num_samples", [1, 4])
def test_kl_terms_have_one_value_per_query_finite_and_nonnegative_where_closed_form(variant, num_samples):
    model = _build(variant)
    x, context, index = _data()
    terms = model.kl(x, _pooled(context), num_samples, decoder_index=index)
    variant = variant.partition(":")[0]
    assert sorted(terms) == (["c", "z"] if variant in NS_FAMILY else ["z"])
    for name, value in terms.items():
        assert value.shape == (B,) and value.dtype == torch.float64 and torch.isfinite(value).all()
        if not (variant == "homoencoder_vampprior" and name == "c"):  # closed forms
            assert (value >= 0).all() and (value > 0).any()


@pytest.mark.parametrize("variant", VAE_FAMILY)
def test_vae_family_kl_is_the_closed_form_of_the_posterior(variant):
    model = _build(variant)
    x, context, index = _data()
    q = model.posterior(x, context).base_dist
    expected = _standard_normal_kl(q.loc, q.scale)
    torch.testing.assert_close(model.kl(x, context, 3, decoder_index=index)["z"], expected)


@pytest.mark.parametrize("variant", ["neural_statistician", "homoencoder"])
def test_ns_kl_of_c_is_the_closed_form_for_the_standard_normal_prior(variant):
    model = _build(variant)
    x, context, index = _data()
    q_c = model.posterior_c(_set_for_c(variant, x, context)).base_dist
    expected = _standard_normal_kl(q_c.loc, q_c.scale)
    for ctx in (context, _pooled(context)):
        torch.testing.assert_close(model.kl(x, ctx, 2, decoder_index=index)["c"], expected)


@pytest.mark.parametrize("variant", NS_FAMILY)
@pytest.mark.parametrize("num_samples", [1, 6])
def test_ns_kl_of_z_is_the_closed_form_averaged_over_the_draws_of_c(variant, num_samples):
    """E_{q(c|S)} KL(q(z|x,c) ‖ p(z|c)) over the K draws of c (replayed: c is drawn first)."""
    model = _build(variant)
    x, context, index = _data()
    torch.manual_seed(11)
    terms = model.kl(x, context, num_samples, decoder_index=index)
    torch.manual_seed(11)
    c = model.posterior_c(_set_for_c(variant, x, context)).rsample((num_samples,))  # (K, B, c)
    q_z = model.posterior_z(x, c).base_dist
    p_loc, p_logvar = model.prior_z(c).chunk(2, dim=-1)
    expected = _gaussian_kl(q_z.loc, q_z.scale, p_loc, torch.exp(0.5 * p_logvar)).mean(0)  # (B,)
    torch.testing.assert_close(terms["z"], expected)


@pytest.mark.parametrize("num_samples", [1, 6])
def test_vampprior_kl_of_c_is_the_sample_estimate_against_the_mixture(num_samples):
    """No closed form against a mixture: mean over the K draws of log q(c|D) − log p(c), with
    p(c) = (1/M) Σ_m N(c; μ_m, σ_m²) from the pseudo-sets, written out here."""
    model = _build("homoencoder_vampprior")
    x, context, index = _data()
    torch.manual_seed(12)
    terms = model.kl(x, context, num_samples, decoder_index=index)
    torch.manual_seed(12)
    q_c = model.posterior_c(context).base_dist
    c = q_c.rsample((num_samples,))  # (K, B, c)
    components = model.posterior_c(model.pseudo_sets()).base_dist  # (M, c)
    per_component = _log_normal(c.unsqueeze(-2), components.loc, components.scale)  # (K, B, M)
    log_p = torch.logsumexp(per_component, dim=-1) - math.log(SIZES["num_pseudo_sets"])
    expected = (_log_normal(c, q_c.loc, q_c.scale) - log_p).mean(0)
    torch.testing.assert_close(terms["c"], expected)


def _bernoulli_log_likelihood(x, logits):
    """Σ x·log σ(l) + (1 − x)·log σ(−l) over the event, ``(K, B)``."""
    xf = x.reshape(x.shape[0], -1)
    lf = logits.reshape(*logits.shape[:2], -1)
    return (xf * F.logsigmoid(lf) + (1 - xf) * F.logsigmoid(-lf)).sum(-1)


def _replayed_log_likelihood(model, variant, x, context, index, num_samples):
    """log p(x | latents) at the draws ``log_weights`` makes, replayed from the same seed."""
    variant = variant.partition(":")[0]  # the backbone does not change the model's latents
    if variant in VAE_FAMILY:
        z = model.posterior(x, context).rsample((num_samples,))  # (K, B, z)
        groups = index if variant in MULTI_DECODER else torch.zeros_like(index)
        logits = model.decoder(z.reshape(num_samples * B, -1), groups.repeat(num_samples)).view(num_samples, B, -1)
        return _bernoulli_log_likelihood(x, logits)
    c = model.posterior_c(_set_for_c(variant, x, context)).rsample((num_samples,))  # (K, B, c)
    z = model.posterior_z(x, c).rsample()  # (K, B, z)
    return _bernoulli_log_likelihood(x, model.decoder(torch.cat([z, c], dim=-1)))


def _training_weight(variant, name):
    """The training objective's weight of each KL term: 1, except c: 1/|S| (NS, S = D ∪ {x}) or 1/|D| (VHE)."""
    variant = variant.partition(":")[0]
    if name == "z":
        return 1.0
    return 1.0 / (N + 1) if variant == "neural_statistician" else 1.0 / N


@pytest.mark.parametrize("variant", ALL_BACKBONES)
def test_training_log_weight_plus_weighted_kl_terms_is_the_log_likelihood_at_the_same_draws(variant):
    """log_weights(training) + Σ_t w_t·KL_t = log p(x | latents), exactly, at one draw (K = 1: every
    KL term is then the one at that draw, including the z-term's dependence on c)."""
    model = _build(variant)
    x, context, index = _data()
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        training = model.log_weights(x, context, 1, decoder_index=index, objective="training")[0]
        torch.manual_seed(seed)
        terms = model.kl(x, context, 1, decoder_index=index)
        torch.manual_seed(seed)
        log_likelihood = _replayed_log_likelihood(model, variant, x, context, index, 1)[0]
        reconstructed = training + sum(_training_weight(variant, name) * value for name, value in terms.items())
        torch.testing.assert_close(reconstructed, log_likelihood)


@pytest.mark.parametrize("variant", VAE_FAMILY)
def test_vae_family_training_identity_holds_for_every_draw(variant):
    """Without a c, the closed-form KL does not depend on the draw: the identity holds per sample at K > 1."""
    model = _build(variant)
    x, context, index = _data()
    torch.manual_seed(7)
    training = model.log_weights(x, context, 5, decoder_index=index, objective="training")
    torch.manual_seed(7)
    log_likelihood = _replayed_log_likelihood(model, variant, x, context, index, 5)
    torch.testing.assert_close(training + model.kl(x, context, 5, decoder_index=index)["z"], log_likelihood)


@pytest.mark.parametrize("variant", ALL_BACKBONES)
@torch.no_grad()
def test_mean_marginal_log_weight_is_the_log_likelihood_minus_the_unweighted_kl_terms(variant):
    """E[log_weights(marginal)] = E[log p(x | latents)] − Σ_t KL_t (each KL at weight 1).

    At the same draws (same seed) the training mean is mean(log p(x|·)) − Σ_t w_t·KL_t exactly, so
    d = mean(marginal) − mean(training) + Σ_t (1 − w_t)·KL_t has expectation 0. Per draw, marginal −
    training differs from d's summand by a constant, except for the VampPrior, where the c-term adds
    variance to it (so its spread over-estimates d's: a conservative bound). Tolerance: 5 standard
    errors of the mean over K = 20 000 draws (fixed seed).
    """
    model = _build(variant)
    x, context, index = _data()
    k = 20_000
    torch.manual_seed(21)
    marginal = model.log_weights(x, context, k, decoder_index=index)
    torch.manual_seed(21)
    training = model.log_weights(x, context, k, decoder_index=index, objective="training")
    torch.manual_seed(21)
    terms = model.kl(x, context, k, decoder_index=index)
    d = marginal.mean(0) - training.mean(0) + sum((1 - _training_weight(variant, n)) * v for n, v in terms.items())
    stderr = (marginal - training).std(0) / k**0.5
    assert (stderr > 0).all()
    assert (d.abs() <= 5 * stderr).all(), (d, stderr)


# ====================================================================== representation
@pytest.mark.parametrize("variant", ALL)
def test_representation_carries_no_gradient_even_from_inputs_that_require_it(variant):
    model = _build(variant)
    x, context, _ = _data()
    x.requires_grad_(True)
    context.requires_grad_(True)
    assert torch.is_grad_enabled()
    for ctx in (context, _pooled(context)):
        code = model.representation(x, ctx)
        assert code.shape == (B, SIZES["z_dim"]) and not code.requires_grad and code.grad_fn is None


@pytest.mark.parametrize("variant", ALL)
def test_representation_runs_in_eval_mode_and_restores_every_training_flag(variant):
    model = _build(variant)
    x, context, _ = _data()
    seen = []
    hooks = [m.register_forward_pre_hook(lambda module, args: seen.append(module.training)) for m in model.modules()]
    submodules = list(model.children())
    for setting in ("train", "eval", "mixed"):
        model.train(setting != "eval")
        if setting == "mixed":
            submodules[0].eval()  # a user's partial freeze must survive the call
        before = [m.training for m in model.modules()]
        seen.clear()
        model.representation(x, context)
        assert seen and not any(seen), "a submodule ran in training mode"
        assert [m.training for m in model.modules()] == before
    for h in hooks:
        h.remove()


@pytest.mark.parametrize("variant", ALL)
def test_representation_restores_training_flags_when_it_raises(variant, monkeypatch):
    model = _build(variant).train()
    x, context, _ = _data()

    def failing(*args, **kwargs):
        assert not model.training  # it did switch to eval mode first
        raise RuntimeError("inside the model")

    monkeypatch.setattr(model, "_representation", failing)
    with pytest.raises(RuntimeError, match="inside the model"):  # passes validation, fails inside
        model.representation(x, context)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("variant", ALL)
def test_x_or_context_of_another_dtype_than_the_model_is_refused(variant, method):
    """float32 data into the (float64) test model, or a context whose dtype differs from x's."""
    model = _build(variant)
    x, context, index = _data()
    _refused(model, method, "x: expected dtype torch.float64 (the model's parameters), got torch.float32; convert with "
             "x.to(torch.float64)", x.float(), context, decoder_index=index)
    if model.uses_context:
        _refused(model, method, "context: expected dtype torch.float64 (as x), got torch.float32", x, context.float(),
                 decoder_index=index)


@pytest.mark.parametrize("variant", ALL)
def test_representation_is_the_same_in_train_and_eval_mode(variant):
    model = _build(variant)
    x, context, _ = _data()
    torch.manual_seed(1)
    in_train = model.train().representation(x, context)
    torch.manual_seed(2)
    in_eval = model.eval().representation(x, context)
    torch.testing.assert_close(in_train, in_eval, rtol=0, atol=0)
