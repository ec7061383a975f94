"""The one seam every generative model implements: ``log_weights`` (with ``kl`` and ``representation``).

Shapes, written once: query ``x: (B, *event)``; context dense ``(B, N, *event)`` or a
:class:`~metavae.data.context.Context` (``elements: (P, *event)``, ``index: (B, N)``);
``decoder_index: (B,)``; latents ``(K, B, dim)``; log-weights ``(K, B)``; KL terms ``(B,)``.

The public methods of :class:`LatentVariableModel` validate their arguments once
(:meth:`LatentVariableModel.check_inputs`) and then call hooks that each model implements:
``_elbo_terms`` (the log-likelihood term and the latent terms, from which ``log_weights`` of both
objectives and ``kl`` are assembled) and ``_representation``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, kl_divergence
from torch.distributions.utils import _standard_normal

from metavae.data.context import Context

__all__ = [
    "at_least_float32",
    "noise_shard",
    "reparameterized_sample",
    "Objective",
    "LatentTerm",
    "ELBOTerms",
    "LatentVariableModel",
    "kl_term",
    "diagonal_gaussian",
    "standard_normal",
    "bernoulli_grey_levels",
]

Objective = Literal["marginal", "training"]
"""``"marginal"``: proper importance weights of log p(x) (for IWAE, validation, comparison).
``"training"``: the model's own training objective per sample (differs only for models whose
bound re-weights a term, e.g. the 1/|D|-scaled KL of the Variational Homoencoder)."""

OBJECTIVES: tuple[str, ...] = get_args(Objective)

_INTEGER_DTYPES = frozenset(
    getattr(torch, name) for name in ("uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64")
    if hasattr(torch, name)
)


def _shape(dims: Any) -> str:
    """``(3, 784)``, ``(3,)``, ``(B, 1, 28, 28)``: a shape as Python writes a tuple."""
    parts = [str(d) for d in dims]
    return f"({parts[0]},)" if len(parts) == 1 else "(" + ", ".join(parts) + ")"


@dataclass(frozen=True)
class LatentTerm:
    """One latent variable's contribution to the log-weights.

    Attributes:
        name: the latent's name, the key of :meth:`LatentVariableModel.kl` (``"z"``, ``"c"``).
        q: its proposal (posterior), batch shape ``(B,)`` or ``(K, B)``.
        p: its prior, batch shape broadcastable to ``q``'s.
        sample: the draws ``s ~ q`` that the log-likelihood term was computed at, ``(K, B, dim)``.
        training_weight: w in the training objective ``… − w·KL(q ‖ p)`` (1 unless the model's
            bound re-weights the term, e.g. 1/|D| for the c of the Variational Homoencoder).
    """

    name: str
    q: Distribution
    p: Distribution
    sample: Tensor
    training_weight: float = 1.0


@dataclass(frozen=True)
class ELBOTerms:
    """A model's joint density split at one set of draws: ``log p(x | latents)`` and the latent terms.

    Attributes:
        log_likelihood: ``log p(x | latents)`` at the draws, ``(K, B)``.
        latents: the latent terms, in the order they are added to the log-weights.
    """

    log_likelihood: Tensor
    latents: tuple[LatentTerm, ...]


class LatentVariableModel(nn.Module):
    """A latent-variable model with an amortised proposal.

    Shapes: query ``x: (B, *event)``, context ``(B, N, *event)`` or a
    :class:`~metavae.data.context.Context`, latents ``(K, B, dim)``, log-weights ``(K, B)``.
    ``decoder_index: (B,)`` names the training distribution whose decoder scores each example.
    Models with a single decoder (:attr:`num_decoders` = 1) ignore it but still check its shape
    and dtype when it is given (the trainer passes it to every model); models with several
    decoders require it.

    Public methods and their semantics, the same for every model:

    - :meth:`log_weights` — ``log p(x, latents) − log q(latents | ·)`` per draw, ``(K, B)``;
    - :meth:`kl` — the KL divergence of each latent's posterior from its prior, ``(B,)`` each;
    - :meth:`representation` — the posterior mean of the per-point latent, ``(B, code_dim)``:
      a deterministic code, computed without gradients (under ``torch.no_grad()``, so the output
      never requires grad) and in eval mode (the module and every submodule are switched to eval
      for the call and their previous training flags restored afterwards).

    Each validates its arguments first (:meth:`check_inputs`) and raises ``ValueError`` naming the
    argument, the expected and the actual shape, dtype or value; nothing is computed before.

    Subclasses set :attr:`event_shape` and :attr:`uses_context`, override :attr:`num_decoders` if
    they have several decoders, and implement the two hooks ``_elbo_terms`` and
    ``_representation`` (which receive validated inputs, with integer indices as ``torch.long``).
    """

    config_class: ClassVar[type]
    uses_context: ClassVar[bool] = True
    """Whether the proposal reads the context set (then ``context=None`` is refused)."""
    event_shape: tuple[int, ...]
    """Shape of one data point, e.g. ``(1, 28, 28)``."""

    @property
    def num_decoders(self) -> int:
        """Number of decoders p_θi(x | ·); with more than one, ``decoder_index`` is required."""
        return 1

    # ------------------------------------------------------------------ public seam
    def log_weights(
        self,
        x: Tensor,
        context: Tensor | Context | None,
        num_samples: int = 1,
        decoder_index: Tensor | None = None,
        objective: Objective = "marginal",
    ) -> Tensor:
        """``log p(x, latents) − log q(latents | x, context)`` for latents ~ q; shape ``(num_samples, B)``.

        With latent terms (q_t, p_t, s_t, w_t) from the model's ``_elbo_terms`` at draws s_t ~ q_t:

        - ``objective="marginal"``: ``log p(x | s) + Σ_t [log p_t(s_t) − log q_t(s_t)]`` — proper
          importance weights, so ``iwae`` of them is a stochastic lower bound on ``log p(x)``
          comparable across models, and their mean is the ELBO;
        - ``objective="training"``: ``log p(x | s) − Σ_t w_t·KL(q_t ‖ p_t)``, the per-sample terms the
          model is trained on: each KL in closed form where ``torch.distributions`` has one, else
          its one-sample estimate at s_t (:func:`kl_term`); w_t the model's weight of the term.

        Args:
            x: queries ``(B, *event_shape)``, floating point.
            context: ``(B, N, *event_shape)`` sets with N ≥ 1, or a ``Context`` with B sets;
                ``None`` only for models that do not read it (:attr:`uses_context` false).
            num_samples: K ≥ 1, a Python ``int``.
            decoder_index: ``(B,)`` integer decoder of each query, in ``[0, num_decoders)``;
                required when :attr:`num_decoders` > 1.
            objective: ``"marginal"`` or ``"training"``.

        Raises:
            ValueError: an argument is malformed (see :meth:`check_inputs`).
        """
        self.check_inputs(x, context, num_samples, decoder_index, objective)
        context, decoder_index = _as_long_indices(context, decoder_index)
        terms = self._elbo_terms(x, context, num_samples, decoder_index)
        log_w = terms.log_likelihood  # (K, B)
        if objective == "training":
            for t in terms.latents:
                log_w = log_w - t.training_weight * kl_term(t.q, t.p, t.sample)
            return log_w
        for t in terms.latents:
            log_w = log_w + t.p.log_prob(t.sample) - t.q.log_prob(t.sample)
        return log_w

    def kl(
        self,
        x: Tensor,
        context: Tensor | Context | None,
        num_samples: int = 1,
        decoder_index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The KL divergence of each latent's posterior from its prior, ``{name: (B,)}``.

        For every latent term (q_t, p_t) of the model: ``KL(q_t ‖ p_t)`` in closed form where
        ``torch.distributions`` has one, else the one-sample estimate ``log q_t(s) − log p_t(s)``;
        either way averaged over the ``num_samples`` draws of the latents it depends on. E.g.
        ``{"z": KL(q(z|·) ‖ N(0, I))}`` for the VAE and MetaVAE, and for the Neural Statistician
        family ``{"z": E_{q(c|S)} KL(q(z|x,c) ‖ p(z|c)), "c": KL(q(c|S) ‖ p(c))}``.

        The terms are unweighted: the training objective (``log_weights(objective="training")``)
        subtracts ``w_t·KL_t`` with the model's weight w_t — 1 for z, and for c the
        ``c_term_weight`` of the Neural Statistician family (1/|S| or 1/|D|).

        Args: as :meth:`log_weights` (``decoder_index`` is required by multi-decoder models,
        whose log-likelihood term is computed along with the latents).

        Raises:
            ValueError: an argument is malformed (see :meth:`check_inputs`).
        """
        self.check_inputs(x, context, num_samples, decoder_index)
        context, decoder_index = _as_long_indices(context, decoder_index)
        terms = self._elbo_terms(x, context, num_samples, decoder_index)
        result = {}
        for t in terms.latents:
            value = kl_term(t.q, t.p, t.sample)  # (B,) in closed form of an unsampled q, else (K, B)
            result[t.name] = value if value.dim() == 1 else value.mean(0)
        return result

    def representation(self, x: Tensor, context: Tensor | Context | None) -> Tensor:
        """Deterministic code of each query, the posterior mean of its latent: ``(B, code_dim)``.

        Computed under ``torch.no_grad()`` (the output never requires grad) and in eval mode: the
        module is switched to eval for the call and every submodule's training flag restored after.

        Raises:
            ValueError: ``x`` or ``context`` is malformed (see :meth:`check_inputs`).
        """
        self._check_x_and_context(x, context)
        context, _ = _as_long_indices(context, None)
        flags = [(module, module.training) for module in self.modules()]
        self.eval()
        try:
            with torch.no_grad():
                return self._representation(x, context)
        finally:
            for module, flag in flags:
                module.training = flag

    @classmethod
    def from_config(cls, config: Any, event_shape: tuple[int, ...], num_distributions: int) -> "LatentVariableModel":
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks
    def _elbo_terms(self, x: Tensor, context: Tensor | Context | None, num_samples: int,
                    decoder_index: Tensor | None) -> ELBOTerms:
        """Draw the latents (``num_samples`` each, by ``rsample``) and return ``log p(x | latents)``
        ``(K, B)`` with one :class:`LatentTerm` per latent. Inputs are validated."""
        raise NotImplementedError

    def _representation(self, x: Tensor, context: Tensor | Context | None) -> Tensor:
        """Posterior mean ``(B, code_dim)``; called validated, in eval mode, without gradients."""
        raise NotImplementedError

    # ------------------------------------------------------------------ validation
    def check_inputs(
        self,
        x: Any,
        context: Any,
        num_samples: Any = 1,
        decoder_index: Any = None,
        objective: Any = "marginal",
    ) -> None:
        """Raise ``ValueError`` for the first malformed argument of :meth:`log_weights`.

        The message names the argument, what was expected and what was given, e.g.
        ``"x: expected shape (B, 1, 28, 28), got (3, 784)"``. Checked: ``x`` a floating tensor
        ``(B, *event_shape)``; ``context`` present if :attr:`uses_context`, and if given a floating
        tensor ``(B, N, *event_shape)`` with N ≥ 1, or a ``Context`` whose elements are
        ``(P, *event_shape)`` and whose index is an integer ``(B, N)`` tensor, N ≥ 1, with values in
        ``[0, P)``; ``num_samples`` a Python int ≥ 1; ``decoder_index`` an integer ``(B,)`` tensor
        (not bool), in ``[0, num_decoders)`` and required if there are several decoders;
        ``objective`` one of ``"marginal"``, ``"training"``. Costs a few reductions over the
        (small) index tensors, no loop over elements.
        """
        self._check_x_and_context(x, context)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int):
            raise ValueError(f"num_samples: expected a Python int ≥ 1, got {num_samples!r} ({type(num_samples).__name__})")
        if num_samples < 1:
            raise ValueError(f"num_samples: expected a Python int ≥ 1, got {num_samples}")
        self._check_decoder_index(decoder_index, x.shape[0])
        if objective not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {', '.join(map(repr, OBJECTIVES))}, got {objective!r}")

    def _check_x_and_context(self, x: Any, context: Any) -> None:
        event = tuple(self.event_shape)
        expected = _shape(("B", *event))
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a floating-point tensor of shape {expected}, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got {x.dtype}")
        if tuple(x.shape[1:]) != event or x.dim() != 1 + len(event):
            raise ValueError(f"x: expected shape {expected}, got {_shape(x.shape)}")
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), x.dtype)
        if x.dtype != dtype:
            raise ValueError(f"x: expected dtype {dtype} (the model's parameters), got {x.dtype}; convert with x.to({dtype})")
        b = x.shape[0]
        if context is None:
            if self.uses_context:
                raise ValueError(f"context: expected a context set {_shape(('B', 'N', *event))} or a Context "
                                 f"({type(self).__name__} infers its latents from it), got None")
            return
        if isinstance(context, Context):
            self._check_context_object(context, b, x.dtype)
            return
        if not isinstance(context, Tensor):
            raise ValueError(f"context: expected a tensor of shape {_shape(('B', 'N', *event))} or a Context, "
                             f"got {type(context).__name__}")
        if not context.is_floating_point():
            raise ValueError(f"context: expected a floating-point tensor, got {context.dtype}")
        if context.dtype != x.dtype:
            raise ValueError(f"context: expected dtype {x.dtype} (as x), got {context.dtype}")
        if tuple(context.shape[2:]) != event or context.dim() != 2 + len(event):
            raise ValueError(f"context: expected shape {_shape(('B', 'N', *event))}, got {_shape(context.shape)}")
        if context.shape[0] != b:
            raise ValueError(f"context: expected {b} sets (one per query in x), got {context.shape[0]}")
        if context.shape[1] == 0:
            raise ValueError(f"context: expected at least one element per set (N ≥ 1), got N = 0 in shape {_shape(context.shape)}")

    def _check_context_object(self, context: Context, b: int, dtype: torch.dtype) -> None:
        event = tuple(self.event_shape)
        elements, index = context.elements, context.index
        if not isinstance(elements, Tensor):
            raise ValueError(f"context.elements: expected a floating-point tensor of shape {_shape(('P', *event))}, "
                             f"got {type(elements).__name__}")
        if not elements.is_floating_point():
            raise ValueError(f"context.elements: expected a floating-point tensor, got {elements.dtype}")
        if elements.dtype != dtype:
            raise ValueError(f"context.elements: expected dtype {dtype} (as x), got {elements.dtype}")
        if tuple(elements.shape[1:]) != event or elements.dim() != 1 + len(event):
            raise ValueError(f"context.elements: expected shape {_shape(('P', *event))}, got {_shape(elements.shape)}")
        if not isinstance(index, Tensor):
            raise ValueError(f"context.index: expected an integer tensor of shape (B, N), got {type(index).__name__}")
        if index.dtype not in _INTEGER_DTYPES:
            raise ValueError(f"context.index: expected an integer tensor, got {index.dtype}")
        if index.dim() != 2:
            raise ValueError(f"context.index: expected shape (B, N), got {_shape(index.shape)}")
        if index.shape[0] != b:
            raise ValueError(f"context: expected {b} sets (one per query in x), got {index.shape[0]}")
        if index.shape[1] == 0:
            raise ValueError(f"context.index: expected at least one element per set (N ≥ 1), got N = 0 in shape {_shape(index.shape)}")
        if index.numel() > 0:
            _check_range("context.index", index, elements.shape[0], f"context.elements has {elements.shape[0]} rows")

    def _check_decoder_index(self, decoder_index: Any, b: int) -> None:
        num_decoders = self.num_decoders
        if decoder_index is None:
            if num_decoders > 1:
                raise ValueError(f"decoder_index: expected an integer tensor of shape (B,) = ({b},) (required: this model "
                                 f"has {num_decoders} decoders, one per training distribution), got None")
            return
        if not isinstance(decoder_index, Tensor):
            raise ValueError(f"decoder_index: expected an integer tensor of shape (B,) = ({b},), got {type(decoder_index).__name__}")
        if decoder_index.dtype not in _INTEGER_DTYPES:
            raise ValueError(f"decoder_index: expected an integer tensor, got {decoder_index.dtype}")
        if tuple(decoder_index.shape) != (b,):
            raise ValueError(f"decoder_index: expected shape (B,) = ({b},) (one per query in x), got {_shape(decoder_index.shape)}")
        if num_decoders > 1 and b > 0:
            _check_range("decoder_index", decoder_index, num_decoders, f"this model has {num_decoders} decoders")


def _check_range(name: str, index: Tensor, stop: int, why: str) -> None:
    """Raise unless all of the non-empty integer ``index`` lies in ``[0, stop)``."""
    low, high = (int(v) for v in torch.aminmax(index))
    wrong = ([f"min {low}"] if low < 0 else []) + ([f"max {high}"] if high >= stop else [])
    if wrong:
        raise ValueError(f"{name}: expected values in [0, {stop}) ({why}), got {' and '.join(wrong)}")


def _as_long_indices(context: Any, decoder_index: Tensor | None) -> tuple[Any, Tensor | None]:
    """Validated integer indices as ``torch.long`` (a ``uint8`` index would select as a mask)."""
    if isinstance(context, Context) and context.index.dtype != torch.long:
        context = Context(context.elements, context.index.long())
    if decoder_index is not None and decoder_index.dtype != torch.long:
        decoder_index = decoder_index.long()
    return context, decoder_index


def kl_term(q: Distribution, p: Distribution, sample: Tensor) -> Tensor:
    """KL(q ‖ p) in closed form where ``torch.distributions`` has one, else the one-sample
    estimate ``log q(s) − log p(s)`` at ``s = sample``. Either way an unbiased estimate of the KL;
    the closed form has lower variance. Used by the ``"training"`` objective and by ``kl``: the
    ``"marginal"`` log-weights must stay per-sample importance weights."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(sample) - p.log_prob(sample)


_NOISE_SHARD: ContextVar[tuple[slice, int] | None] = ContextVar("metavae_noise_shard", default=None)


@contextlib.contextmanager
def noise_shard(rows: slice, batch_size: int) -> Iterator[None]:
    """Within this block, :func:`reparameterized_sample` draws the standard-normal noise of a whole
    batch of ``batch_size`` rows (the batch axis is the second-last of every latent) and uses the
    ``rows`` of it: a shard of a batch is then perturbed exactly as those rows of the whole batch
    would be (data-parallel training, :mod:`metavae.training.distributed`)."""
    token = _NOISE_SHARD.set((rows, batch_size))
    try:
        yield
    finally:
        _NOISE_SHARD.reset(token)


def reparameterized_sample(q: Distribution, sample_shape: tuple[int, ...] = ()) -> Tensor:
    """``q.rsample(sample_shape)`` for a diagonal Gaussian ``q`` — the same random numbers, the same
    stream — except inside :func:`noise_shard`, where the noise of the whole batch is drawn and the
    shard's rows are used: ``loc + ε[…, rows, :] · scale`` with ``ε ~ N(0, I)`` of the whole batch's shape."""
    shard = _NOISE_SHARD.get()
    if shard is None:
        return q.rsample(torch.Size(sample_shape))
    rows, batch_size = shard
    normal = q.base_dist if isinstance(q, Independent) else q
    shape = q._extended_shape(torch.Size(sample_shape))  # (…, B_shard, d)
    full = (*shape[:-2], batch_size, shape[-1])
    eps = _standard_normal(full, dtype=normal.loc.dtype, device=normal.loc.device)[..., rows, :]
    return normal.loc + eps * normal.scale


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is in a half precision (bf16/fp16 from autocast), else unchanged (float32, float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def diagonal_gaussian(params: Tensor) -> Independent:
    """Split ``(…, 2·d)`` into loc and log-variance: ``Independent(Normal(loc, exp(½·logvar)), 1)``.

    Argument validation is off: the scale is positive by construction, and a NaN coming out of a
    diverged network must flow into the loss, where the trainer's divergence guard names the step,
    rather than stop deep inside ``torch.distributions``.

    The parameters are taken in at least float32 whatever the network's precision (under bf16/fp16
    autocast), so every log-density and KL computed from the distribution is float32 (or float64).
    """
    loc, logvar = at_least_float32(params).chunk(2, dim=-1)
    return Independent(Normal(loc, torch.exp(0.5 * logvar.clamp(-30.0, 20.0)), validate_args=False), 1, validate_args=False)


def standard_normal(dim: int, like: Tensor) -> Independent:
    """N(0, I) in ``dim`` dimensions (batch shape ``()``), on ``like``'s device and dtype."""
    return Independent(Normal(like.new_zeros(dim), like.new_ones(dim)), 1)


def bernoulli_grey_levels(logits: Tensor, event_dims: int) -> Distribution:
    """Bernoulli likelihood applied to grey levels in [0, 1] (the paper's choice).

    ``log_prob(x) = Σ x·log σ(l) + (1−x)·log(1−σ(l))`` — the binary cross-entropy, which is a
    proper log-density only at binary x; for grey levels it is the standard pseudo-likelihood
    and log-likelihood numbers are comparable between models using it, not with other
    likelihoods. Support validation is therefore switched off.
    """
    return Independent(Bernoulli(logits=at_least_float32(logits), validate_args=False), event_dims)  # float32 log-densities
