"""The pipeline checked by what reaches the model, on marker data (see ``pipeline_helpers``).

Every image of the marker data says in its pixels which part (train/test) and base image it is,
and its rotation is read off a blob. The real ``train`` / ``measure_test_log_likelihood`` /
``run_probe`` run with spies on the model (or a transparent fake model), and the tests decode
the tensors the model actually received. Expected values are literal numbers (the paper's
rotations, the configured sizes) or computed here by hand, never by the library's own code path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline as real_make_pipeline
from torch import nn

from conftest import TINY
from metavae.config import load_config
from metavae.data.context import Context
from metavae.data.task import Batch
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.experiments.transformed_images import build_model, build_task, measure_test_log_likelihood, run_probe, train
from metavae.models import MetaVAE
from metavae.training.checkpoint import load_checkpoint, save_checkpoint
from metavae.training.trainer import Trainer
from pipeline_helpers import (
    N_TEST,
    N_TRAIN,
    ROTATE_SPARSE_HELD_OUT,
    ROTATE_SPARSE_TRAIN,
    Call,
    ScriptedValidation,
    decode,
    make_marker_root,
    same_state,
    spy_log_weights,
)

# Sizes of the recorded run: TINY's, with every count that one stage could take from another made distinct.
CONTEXT_SIZE, BATCH, VALIDATION_SIZE = 5, 20, 100  # TINY
VAL_EXAMPLES, TEST_EXAMPLES = 16, 12  # train.val_examples, evaluation.test_examples (per distribution)
TRAIN_POOL, VAL_POOL, TEST_POOL = 30, 35, 40  # train.context_pool_size, train.val_pool_size, evaluation.pool_size
VAL_K = 300  # train.val_importance_samples: > the per-pass chunk of 20000 // (5·16) = 250 samples, so chunked
TEST_K = 6  # evaluation.importance_samples
RECORDED = [("train.val_importance_samples", VAL_K), ("evaluation.importance_samples", TEST_K),
            ("train.val_examples", VAL_EXAMPLES), ("evaluation.test_examples", TEST_EXAMPLES),
            ("train.val_pool_size", VAL_POOL), ("evaluation.pool_size", TEST_POOL)]
NAMES = ["rotate=-160", "rotate=-80", "rotate=0", "rotate=80", "rotate=160"]  # distribution names, decoder order


def _config(*extra):
    return load_config(None, [*TINY, *extra])


# --------------------------------------------------------------------------- one recorded run


@dataclass
class RecordedRun:
    validation: str
    fit_calls: list[Call]  # every log_weights call during train(...)
    test_calls: list[Call]  # every call during measure_test_log_likelihood(...)

    @property
    def training(self) -> list[Call]:
        return [c for c in self.fit_calls if c.grad_enabled]

    def validations(self) -> list[list[Call]]:
        """The no-grad calls of ``fit``, grouped into validations (maximal runs between training steps)."""
        groups: list[list[Call]] = []
        previous_was_validation = False
        for call in self.fit_calls:
            if not call.grad_enabled:
                if not previous_was_validation:
                    groups.append([])
                groups[-1].append(call)
            previous_was_validation = not call.grad_enabled
        return groups


@pytest.fixture(scope="module", params=["train_holdout", "test"])
def recorded_run(request, tmp_path_factory) -> RecordedRun:
    """MetaVAE trained for 6 steps (validation at steps 3 and 6), then its test log-likelihood
    measured, with every ``log_weights`` call recorded."""
    tmp = tmp_path_factory.mktemp(f"recorded_{request.param}")
    root = make_marker_root(tmp / "data")
    config = _config(("data.validation", request.param), *RECORDED)
    with pytest.MonkeyPatch.context() as mp:
        calls = spy_log_weights(mp, MetaVAE)
        train(config, tmp / "run", root, progress=False)
        n_fit = len(calls)
        measure_test_log_likelihood(tmp / "run", root)
    return RecordedRun(request.param, calls[:n_fit], calls[n_fit:])


def _assert_one_distribution_per_example(call: Call, is_test: bool, what: str) -> None:
    """Query, every element of its context set and its decoder: one distribution, one part."""
    q, ctx = call.query, call.context
    assert call.decoder_index is not None and call.decoder_index.shape == q.angle.shape, what
    assert ((call.decoder_index >= 0) & (call.decoder_index < 5)).all(), what
    decoder_rotation = np.asarray(ROTATE_SPARSE_TRAIN)[call.decoder_index]
    wrong = q.angle != decoder_rotation
    assert not wrong.any(), (f"{what}: {wrong.sum()} of {wrong.size} queries are not rotated by their decoder's training "
                             f"rotation, e.g. query {q.angle[wrong][:3]} vs decoder {decoder_rotation[wrong][:3]}")
    wrong = ctx.angle != q.angle[:, None]
    assert not wrong.any(), f"{what}: {wrong.sum()} of {wrong.size} context elements rotated differently from their query"
    assert (q.is_test == is_test).all(), f"{what}: queries from the wrong part"
    assert (ctx.is_test == is_test).all(), f"{what}: context elements from the wrong part"


# --------------------------------------------------------------------------- class 1: one distribution per example


def test_training_batches_pair_each_query_with_context_and_decoder_of_its_own_distribution(recorded_run):
    training = recorded_run.training
    assert len(training) == 6  # max_steps
    for step, call in enumerate(training):
        _assert_one_distribution_per_example(call, is_test=False, what=f"training step {step + 1}")
        assert np.bincount(call.decoder_index, minlength=5).tolist() == [BATCH] * 5  # batch_size per distribution
        assert call.context_index.shape == (5 * BATCH, CONTEXT_SIZE)  # data.context_size
        assert len(call.elements.angle) == 5 * TRAIN_POOL  # train.context_pool_size per distribution
        assert all(len(set(row)) == CONTEXT_SIZE for row in call.context.key.tolist())  # sets without repeats


def test_evaluation_batches_pair_each_query_with_context_and_decoder_of_its_own_distribution(recorded_run):
    validations = recorded_run.validations()
    assert len(validations) == 2  # validate_every 3 over 6 steps
    val_is_test = recorded_run.validation == "test"
    for v, group in enumerate(validations):
        for call in group:
            _assert_one_distribution_per_example(call, is_test=val_is_test, what=f"validation {v + 1}")
            assert np.bincount(call.decoder_index, minlength=5).tolist() == [VAL_EXAMPLES] * 5
            assert call.context_index.shape == (5 * VAL_EXAMPLES, CONTEXT_SIZE)
            assert len(call.elements.angle) == 5 * VAL_POOL  # train.val_pool_size
    assert recorded_run.test_calls, "measure_test_log_likelihood never called the model"
    for call in recorded_run.test_calls:
        _assert_one_distribution_per_example(call, is_test=True, what="test log-likelihood")
        assert np.bincount(call.decoder_index, minlength=5).tolist() == [TEST_EXAMPLES] * 5  # evaluation.test_examples
        assert call.context_index.shape == (5 * TEST_EXAMPLES, CONTEXT_SIZE)
        assert len(call.elements.angle) == 5 * TEST_POOL  # evaluation.pool_size
        for d in range(5):  # distinct test images per distribution
            assert len(set(call.query.key[call.decoder_index == d].tolist())) == TEST_EXAMPLES


# --------------------------------------------------------------------------- class 2: validation data


def test_validation_images_are_disjoint_from_training_images_and_contexts(recorded_run):
    train_queries = {k for c in recorded_run.training for k in c.query.key.tolist()}
    train_contexts = {k for c in recorded_run.training for k in c.elements.key.tolist()}
    val_queries = {k for g in recorded_run.validations() for c in g for k in c.query.key.tolist()}
    val_contexts = {k for g in recorded_run.validations() for c in g for k in c.elements.key.tolist()}
    assert not (val_queries | val_contexts) & train_queries, "validation images were also training queries"
    assert not (val_queries | val_contexts) & train_contexts, "validation images were also training context elements"
    val_angles = {a for g in recorded_run.validations() for c in g for a in c.query.angle.tolist()}
    assert val_angles == set(ROTATE_SPARSE_TRAIN), "validation must cover exactly the training rotations (never held-out ones)"
    if recorded_run.validation == "train_holdout":
        # 100 of the 200 train images are held out; the other 100 are all trained on (5 steps = 1 epoch of 20)
        assert all(k < N_TRAIN for k in val_queries | val_contexts), "train_holdout validation must use train-part images"
        assert len(val_queries | val_contexts) <= VALIDATION_SIZE
        assert len(train_queries) == N_TRAIN - VALIDATION_SIZE
    else:
        assert all(k >= 1000 for k in val_queries | val_contexts), "validation: test must use test-part images"
        assert len(train_queries) == N_TRAIN  # nothing of the train part is held out


# --------------------------------------------------------------------------- class 3: objectives


def test_trainer_trains_on_the_training_objective_and_validates_on_the_marginal(recorded_run):
    for call in recorded_run.training:
        assert call.module_training and call.objective == "training"
    for group in recorded_run.validations():
        for call in group:
            assert not call.module_training and call.objective == "marginal"
    for call in recorded_run.test_calls:
        assert not call.grad_enabled and call.objective == "marginal"


class _OneParameter(nn.Module):
    """log w = +θ under the training objective, −θ under the marginal one."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(()))

    def log_weights(self, x, context, num_samples=1, decoder_index=None, objective="marginal"):
        sign = 1.0 if objective == "training" else -1.0
        return (sign * self.theta).expand(num_samples, x.shape[0])


def test_trainer_step_ascends_the_training_objective_at_the_configured_learning_rate(tmp_path):
    """One Adam step on −ELBO of the *training* log-weights moves θ up by lr (Adam's first step is
    lr·sign(gradient)); on the marginal ones it would move down."""
    root = make_marker_root(tmp_path / "data")
    config = _config()
    assert config.train.lr == 2e-4  # TINY keeps the paper's learning rate
    task = build_task(config, root)
    model = _OneParameter()
    trainer = Trainer(model, task, config, tmp_path / "run")
    batch = task.train_batch(0, 0, BATCH, TRAIN_POOL, torch.Generator().manual_seed(0))
    trainer.step(batch, "train")
    assert model.theta.item() == pytest.approx(2e-4, rel=1e-4)


# --------------------------------------------------------------------------- class 5: samples and denominators


def test_validation_and_test_use_the_configured_number_of_importance_samples(recorded_run):
    for group in recorded_run.validations():
        assert sum(c.num_samples for c in group) == VAL_K  # chunks of one validation add up to the setting
        assert len(group) > 1  # 300 > 250 per pass: the chunking path is exercised
    assert sum(c.num_samples for c in recorded_run.test_calls) == TEST_K


class _KnownWeights(nn.Module):
    """log w = x[0, 0, 0] of each query, the same for every sample: its IWAE is exactly that value."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the trainer's optimizer needs a parameter
        self.samples = 0

    def log_weights(self, x, context, num_samples=1, decoder_index=None, objective="marginal"):
        self.samples += num_samples
        return x[:, 0, 0, 0].expand(num_samples, x.shape[0])


# unequal groups: distribution → values of its examples
_GROUPS = {0: [-10.0, -20.0, -30.0], 1: [-7.0], 2: [-100.0, -50.0], 3: [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], 4: [-40.0, -44.0]}
_PER_DISTRIBUTION = [-20.0, -7.0, -75.0, -3.5, -42.0]  # the mean of each group, by hand
_MEAN_OF_MEANS = -29.5  # (−20 − 7 − 75 − 3.5 − 42) / 5; the mean over all 14 examples would be −23


def _known_batch() -> Batch:
    values = [v for d in sorted(_GROUPS) for v in _GROUPS[d]]
    index = [d for d in sorted(_GROUPS) for _ in _GROUPS[d]]
    x = torch.zeros(len(values), 1, 28, 28)
    x[:, 0, 0, 0] = torch.tensor(values)
    order = torch.tensor([5, 0, 13, 7, 2, 9, 11, 1, 4, 12, 3, 8, 6, 10])  # interleave the distributions
    context = Context(torch.zeros(3, 1, 28, 28), torch.zeros(len(values), 2, dtype=torch.long))
    return Batch(x[order], context, torch.tensor(index)[order])


def test_per_distribution_log_likelihood_averages_within_each_distribution():
    model = _KnownWeights()
    result = per_distribution_log_likelihood(model, _known_batch(), 5, 3000, seed=0)
    np.testing.assert_allclose(result.tolist(), _PER_DISTRIBUTION, rtol=0, atol=1e-5)  # logsumexp − log K rounding
    assert model.samples == 3000  # 20000 // 14 = 1428 per pass: three chunks


def test_trainer_validation_is_the_mean_over_distributions_of_per_distribution_means(tmp_path):
    root = make_marker_root(tmp_path / "data")
    config = _config(("train.val_importance_samples", 3000))
    model = _KnownWeights()
    out = Trainer(model, build_task(config, root), config, tmp_path / "run").step(_known_batch(), "val")
    assert out["val_iwae"] == pytest.approx(_MEAN_OF_MEANS, abs=1e-5)
    assert list(out["val_iwae_per_distribution"]) == NAMES
    np.testing.assert_allclose(list(out["val_iwae_per_distribution"].values()), _PER_DISTRIBUTION, rtol=0, atol=1e-5)
    assert model.samples == 3000  # train.val_importance_samples


# --------------------------------------------------------------------------- test log-likelihood, exactly


def _log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


def test_test_log_likelihood_equals_hand_computed_value_for_a_model_with_known_likelihood(tmp_path, monkeypatch):
    """Replaces ``test_log_likelihood < 0`` (cannot fail). With q(z | D, x) = N(0, I) = p(z) and
    decoders that ignore z, every log-weight is exactly log p_θi(x) = S·log σ(l_i) + (784 − S)·log σ(−l_i)
    for a query with pixel sum S under decoder i of constant logit l_i; so is the IWAE. Expected:
    the mean over each distribution's test queries, then over distributions."""
    root = make_marker_root(tmp_path / "data")
    config = _config(("train.max_steps", 1), *RECORDED)
    train(config, tmp_path / "run", root, progress=False)
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    state = payload["state_dict"]
    last_inference = sorted(k for k in state if k.startswith("inference_net.") and k.endswith(".weight"))[-1]
    state[last_inference].zero_()
    state[last_inference.replace(".weight", ".bias")].zero_()
    logits = [-3.0, -2.0, -1.0, 0.5, 1.5]  # one per decoder, decoder order = ROTATE_SPARSE_TRAIN
    last_layer = max(int(k.rsplit(".", 1)[1]) for k in state if k.startswith("decoder.weights."))
    state[f"decoder.weights.{last_layer}"].zero_()
    state[f"decoder.biases.{last_layer}"][:] = torch.tensor(logits)[:, None, None]
    save_checkpoint(path, payload)

    calls = spy_log_weights(monkeypatch, MetaVAE)
    result = measure_test_log_likelihood(tmp_path / "run", root)
    first = calls[0]
    for call in calls[1:]:
        assert np.array_equal(call.query.key, first.query.key)
    assert first.query.is_test.all()  # every query is a test image
    expected = []
    for rotation, logit in zip(ROTATE_SPARSE_TRAIN, logits):
        sums = first.pixel_sum[first.query.angle == rotation]  # grouped by the rotation read off the pixels
        assert len(sums) == TEST_EXAMPLES
        per_query = sums * _log_sigmoid(logit) + (784 - sums) * _log_sigmoid(-logit)
        expected.append(float(per_query.mean()))
    assert list(result["per_distribution"]) == NAMES
    np.testing.assert_allclose(list(result["per_distribution"].values()), expected, rtol=1e-5)
    assert result["test_log_likelihood"] == pytest.approx(sum(expected) / 5, rel=1e-5)
    assert result["settings"]["importance_samples"] == TEST_K and result["settings"]["examples_per_distribution"] == TEST_EXAMPLES


# --------------------------------------------------------------------------- class 4: the probe


class _MarkerCodes(nn.Module):
    """A transparent 'model': the code of a query says what it and its context set are:
    [query is test, query index, query rotation, context all test, any context test, min / max context rotation]."""

    def representation(self, x, context):
        q = decode(x)
        ctx = decode(context.elements)[context.index.numpy()]
        codes = np.stack([q.is_test, q.index, q.angle, ctx.is_test.all(1), ctx.is_test.any(1),
                          ctx.angle.min(1), ctx.angle.max(1)], axis=1)
        return torch.as_tensor(codes, dtype=torch.float32)


class _RecordingClassifier:
    """Wraps the real StandardScaler + LogisticRegression; records what it is fitted and scored on.
    ``score`` returns a fingerprint (classifier number·100 + call number), so the probe's result can
    be traced to the classifier and the data that produced it."""

    def __init__(self, registry: list["_RecordingClassifier"], inner) -> None:
        self.inner, self.number = inner, len(registry)
        self.fits: list[tuple[np.ndarray, np.ndarray]] = []
        self.scores: list[tuple[np.ndarray, np.ndarray, float]] = []
        registry.append(self)

    def fit(self, codes, labels):
        self.fits.append((np.array(codes), np.array(labels)))
        self.inner.fit(codes, labels)
        return self

    def score(self, codes, labels):
        fingerprint = float(100 * (self.number + 1) + len(self.scores))
        self.scores.append((np.array(codes), np.array(labels), fingerprint))
        return fingerprint


def _describe(codes: np.ndarray, labels: np.ndarray) -> dict:
    """What a classifier's data was, from the transparent codes; asserts labels match the images."""
    is_test, index, rotation, ctx_all_test, ctx_any_test, ctx_min, ctx_max = codes.T
    assert np.array_equal(labels, index.astype(int) % 10), "labels not aligned with the images they label"
    assert len(set(rotation.tolist())) == 1, "codes of more than one rotation in one classifier's data"
    return {"part": {0.0: "train", 1.0: "test"}.get(float(is_test.mean()), "mixed"),
            "context_part": "test" if ctx_all_test.all() else ("train" if not ctx_any_test.any() else "mixed"),
            "rotation": float(rotation[0]), "context_rotation_ok": bool((ctx_min == rotation).all() and (ctx_max == rotation).all()),
            "images": len(set(index.tolist())), "n": len(index)}


def test_probe_fits_on_train_codes_scores_on_test_codes_and_invariance_uses_the_reference_classifier(tmp_path, monkeypatch):
    root = make_marker_root(tmp_path / "data")
    config = _config()
    registry: list[_RecordingClassifier] = []
    monkeypatch.setattr("metavae.evaluation.linear_probe.make_pipeline",
                        lambda *steps, **kw: _RecordingClassifier(registry, real_make_pipeline(*steps, **kw)))
    result = run_probe(config, _MarkerCodes(), build_task(config, root))

    assert len(registry) == 1 + len(ROTATE_SPARSE_HELD_OUT) and all(len(c.fits) == 1 for c in registry)
    by_rotation = {}
    for clf in registry:
        fitted = _describe(*clf.fits[0])
        # fitted on the train part of one value, contexts from that value's train part, probe.train_examples images
        assert (fitted["part"], fitted["context_part"], fitted["context_rotation_ok"]) == ("train", "train", True), fitted
        assert fitted["images"] == fitted["n"] == 100
        by_rotation[fitted["rotation"]] = clf
    assert sorted(by_rotation) == sorted([0.0, *ROTATE_SPARSE_HELD_OUT])  # reference 0° (identity) + every held-out value
    reference = by_rotation.pop(0.0)
    assert result["invariance"]["reference"] == 0.0

    for value, clf in by_rotation.items():
        key = f"{value:g}"
        assert len(clf.scores) == 1, f"the classifier of {key} must be scored once, on its own test codes"
        codes, labels, fingerprint = clf.scores[0]
        scored = _describe(codes, labels)
        assert (scored["part"], scored["context_part"], scored["context_rotation_ok"]) == ("test", "test", True), scored
        assert scored["rotation"] == value and scored["images"] == scored["n"] == N_TEST
        assert result["per_value"][key] == fingerprint, f"per_value[{key}] is not its own classifier's test score"

    assert len(reference.scores) == len(ROTATE_SPARSE_HELD_OUT)
    for codes, labels, fingerprint in reference.scores:
        scored = _describe(codes, labels)
        assert (scored["part"], scored["context_part"], scored["context_rotation_ok"]) == ("test", "test", True), scored
        assert scored["images"] == N_TEST
        assert result["invariance"]["per_value"][f"{scored['rotation']:g}"] == fingerprint
    assert sorted(result["invariance"]["per_value"]) == sorted(f"{v:g}" for v in ROTATE_SPARSE_HELD_OUT)
    assert list(result["per_value"]) == [f"{v:g}" for v in ROTATE_SPARSE_HELD_OUT]


class _LabelCodes(nn.Module):
    """Codes that are one-hot labels, shifted by one class (c = label + 1 mod 10) for:
    train images of every rotation except 0°, and test images with index ≥ 30.

    A classifier fitted on a held-out value's train codes learns c ↦ c − 1: right on test images
    ≥ 30, wrong on the 30 others → accuracy 20/50 = 0.4 exactly. The 0° classifier learns c ↦ c:
    right on test images < 30 only → 30/50 = 0.6 exactly."""

    def representation(self, x, context):
        m = decode(x)
        shift = np.where(m.is_test, m.index >= 30, m.angle != 0.0).astype(np.int64)
        return torch.nn.functional.one_hot(torch.as_tensor((m.label + shift) % 10), 10).float()


def test_probe_accuracies_are_exact_fractions_of_correct_test_predictions(tmp_path):
    """Replaces ``0 <= acc <= 1`` (cannot fail): accuracies known by construction."""
    root = make_marker_root(tmp_path / "data")
    config = _config()
    result = run_probe(config, _LabelCodes(), build_task(config, root))
    assert result["per_value"] == {f"{v:g}": 0.4 for v in ROTATE_SPARSE_HELD_OUT}
    assert result["invariance"]["per_value"] == {f"{v:g}": 0.6 for v in ROTATE_SPARSE_HELD_OUT}
    assert result["mean_accuracy"] == pytest.approx(0.4) and result["invariance"]["mean_accuracy"] == pytest.approx(0.6)
    assert result["settings"]["train_examples_per_value"] == 100 and result["settings"]["test_examples_per_value"] == N_TEST


# --------------------------------------------------------------------------- model selection (scripted metric)

# per-distribution validation values; means −170, −120, −172. The best mean (validation 2) is
# neither the best first distribution (validation 1) nor the best last one (validation 3).
SCRIPT = ([-50, -200, -200, -200, -200], [-120, -120, -120, -120, -120], [-200, -200, -200, -200, -60])


def test_best_checkpoint_holds_the_parameters_at_the_highest_validation_value(tmp_path, monkeypatch):
    """Replaces ``test_checkpoint_contents_and_best_is_highest_validation_iwae`` (which compared the
    checkpoint with the metrics file the same code wrote)."""
    scripted = ScriptedValidation(SCRIPT)
    monkeypatch.setattr("metavae.training.trainer.per_distribution_log_likelihood", scripted)
    root = make_marker_root(tmp_path / "data")
    run = tmp_path / "run"
    train(_config(("train.max_steps", 6), ("train.validate_every", 2)), run, root, progress=False)

    assert len(scripted.snapshots) == 3
    s1, s2, s3 = scripted.snapshots
    assert not same_state(s1, s2) and not same_state(s2, s3)  # training moved the parameters in between
    best, last = load_checkpoint(run / "checkpoints" / "best.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    assert same_state(best["state_dict"], s2), "best.pt does not hold the parameters at the highest validation value"
    assert same_state(last["state_dict"], s3), "last.pt does not hold the final parameters"
    assert (best["step"], last["step"]) == (4, 6)
    assert best["best"] == last["best"] == {"val_iwae": -120.0, "step": 4}
    assert {"config", "state_dict", "optimizer", "rng", "step", "best", "library_version"} <= set(last)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert [r["val_iwae"] for r in records] == [-170.0, -120.0, -172.0]  # the mean over the five distributions
    assert [r["val_iwae_per_distribution"] for r in records] == [dict(zip(NAMES, map(float, row))) for row in SCRIPT]
    assert not list((run / "checkpoints").glob("*.tmp")) and not list((run / "checkpoints").glob(".*.tmp"))


# --------------------------------------------------------------------------- class 6: defaults


def test_defaults_are_the_papers_numbers():
    """Wu et al. (2020) §5 / PAPER.md and the README: Adam 2e-4, batch 100, 100 epochs, z 40, hidden 400,
    summary 400 (784→784→400→400, mean over the set), context size 10, context pools of 100; validation
    5,000 train images held out (not the test part); test IWAE with 100 samples on 1,000 images."""
    cfg = load_config(None)
    assert cfg.model_name == "metavae"
    assert (cfg.data.dataset, cfg.data.family, cfg.data.split) == ("mnist", "rotate", "sparse")
    assert cfg.data.context_size == 10
    assert (cfg.data.validation, cfg.data.validation_size, cfg.data.train_subset) == ("train_holdout", 5000, None)
    t = cfg.train
    assert (t.lr, t.batch_size, t.epochs, t.max_steps, t.context_pool_size) == (2e-4, 100, 100, None, 100)
    m = cfg.model
    assert (m.z_dim, m.hidden_dim, m.summary_dim, m.summary_hidden, m.pooling) == (40, 400, 400, (784, 400), "mean")
    assert (cfg.evaluation.importance_samples, cfg.evaluation.test_examples) == (100, 1000)
    for name in ("neural_statistician", "homoencoder", "homoencoder_vampprior"):
        mc = load_config(None, [("model.name", name)]).model
        assert (mc.z_dim, mc.c_dim, mc.hidden_dim, mc.summary_dim, mc.summary_hidden, mc.pooling) == (40, 300, 400, 400, (784, 400), "mean")
    vp = load_config(None, [("model.name", "homoencoder_vampprior")]).model
    assert (vp.num_pseudo_sets, vp.pseudo_set_size) == (500, 10)
    vae = load_config(None, [("model.name", "vae")]).model
    assert (vae.z_dim, vae.hidden_dim, vae.decoders) == (40, 400, "shared")


def test_demo_preset_is_the_readme_demo():
    """README: MetaVAE on rotate/sparse for 3000 steps, probe on 10,000 train images per value and all 10,000 test images."""
    from metavae.cli import demo_config_path

    cfg = load_config(demo_config_path())
    assert (cfg.model_name, cfg.data.family, cfg.data.split, cfg.train.max_steps) == ("metavae", "rotate", "sparse", 3000)
    assert (cfg.probe.train_examples, cfg.probe.test_examples) == (10_000, None)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.data.context_size, cfg.model.z_dim) == (2e-4, 100, 10, 40)


@torch.no_grad()
def test_default_model_and_batches_have_the_paper_shapes(tmp_path):
    """The defaults reach their consumers: layer sizes, mean pooling, context size 10, pools of 100."""
    root = make_marker_root(tmp_path / "data")
    cfg = load_config(None, [("data.validation_size", 100)])  # the marker data has only 200 train images
    task = build_task(cfg, root)
    model = build_model(cfg, task)
    linear = lambda m: [tuple(layer.weight.shape[::-1]) for layer in m.modules() if isinstance(layer, nn.Linear)]  # noqa: E731
    assert linear(model.summary) == [(784, 784), (784, 400), (400, 400)]
    assert linear(model.inference_net) == [(784 + 400, 400), (400, 400), (400, 80)]
    assert [tuple(w.shape) for w in model.decoder.weights] == [(5, 40, 400), (5, 400, 400), (5, 400, 784)]
    a, b = torch.rand(2, 1, 1, 28, 28).unbind(0)
    summary = lambda *elements: model.summary(torch.cat(elements)[None])  # noqa: E731
    torch.testing.assert_close(summary(a), summary(a, a, a))  # mean or max, not sum
    assert not torch.allclose(summary(a, a, b), summary(a, b, b))  # mean, not max
    batch = task.train_batch(0, 0, 20, cfg.train.context_pool_size, torch.Generator().manual_seed(0))
    assert batch.context.index.shape == (5 * 20, 10)
    assert batch.context.elements.shape[0] == 5 * 100


def test_a_distribution_with_no_examples_is_an_error_not_a_perfect_score():
    """Mean over an empty group is undefined; returning 0 (the best log-likelihood) would win model selection."""

    class Zero(nn.Module):
        def log_weights(self, x, context, num_samples=1, **kwargs):
            return torch.zeros(num_samples, x.shape[0])

    x = torch.zeros(2, 1, 2, 2)
    batch = Batch(x, Context(torch.zeros(4, 1, 2, 2), torch.arange(4).view(2, 2)), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match=r"no examples of distribution\(s\) \[1, 2\]"):
        per_distribution_log_likelihood(Zero(), batch, 3, 2, seed=0)
