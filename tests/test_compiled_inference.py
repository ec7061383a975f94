"""Compiled inference on the inclined plane: the output distribution against quadrature and scipy,
the network's inputs (what each variant may and may not read), learning a known posterior, the
fresh-simulation task, the cosine schedule, the experiment's config, evaluation and command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from metavae.config import TrainConfig, resume_conflict
from metavae.data.physics import InclinedPlane, descent_time
from metavae.data.physics_task import FIELDS, PhysicsTask
from metavae.evaluation.exact_posterior import exact_posterior
from metavae.experiments import physics
from metavae.models.compiled_inference import CompiledInference, CompiledInferenceConfig
from metavae.models.distributions import LogitNormalMixture
from metavae.nn import MLP, FiLMMLP
from metavae.training.trainer import Trainer

LOW, HIGH = 1e-4, 1.0


def _mixture() -> LogitNormalMixture:
    f64 = dict(dtype=torch.float64)
    return LogitNormalMixture(torch.tensor([[0.3, -0.2, 0.1], [0.0, 2.0, -1.0]], **f64),
                              torch.tensor([[0.0, 1.5, -2.0], [-3.0, 0.5, 4.0]], **f64),
                              torch.tensor([[0.5, 1.0, 0.3], [0.2, 2.0, 0.05]], **f64), LOW, HIGH)


# ---------------------------------------------------------------------- the output distribution
def test_the_logit_normal_mixture_density_mean_variance_and_cdf_against_quadrature():
    q = _mixture()

    def pdf(v: float, b: int) -> float:
        return float(q.log_prob(torch.tensor([v, v], dtype=torch.float64))[b].exp())

    for b in range(2):
        def density(v: float, b: int = b) -> float:
            return pdf(v, b)

        points = [LOW + (HIGH - LOW) / (1 + math.exp(-y)) for y in (-3, 0.5, 4)]  # where the narrow components sit
        mass = integrate.quad(density, LOW, HIGH, limit=400, points=points)[0]
        mean = integrate.quad(lambda v, d=density: v * d(v), LOW, HIGH, limit=400, points=points)[0]
        second = integrate.quad(lambda v, d=density: v * v * d(v), LOW, HIGH, limit=400, points=points)[0]
        assert mass == pytest.approx(1.0, abs=1e-7)
        assert float(q.mean[b]) == pytest.approx(mean, abs=1e-9)
        assert float(q.variance[b]) == pytest.approx(second - mean**2, abs=1e-9)
        for v in (0.05, 0.4, 0.93):
            assert float(q.cdf(torch.tensor([v, v], dtype=torch.float64))[b]) == pytest.approx(
                integrate.quad(density, LOW, v, limit=400, points=[p for p in points if p < v])[0], abs=1e-7)


def test_logit_normal_quantiles_invert_the_cdf_and_match_the_closed_form_for_one_component():
    q = _mixture()
    levels = torch.tensor([[0.05], [0.5], [0.95]], dtype=torch.float64)
    values = q.icdf(levels)  # (3, 2)
    assert torch.allclose(q.cdf(values), levels.expand(3, 2), atol=1e-9)
    one = LogitNormalMixture(torch.zeros(1, 1), torch.tensor([[0.7]]), torch.tensor([[1.3]]), LOW, HIGH)
    for level in (0.05, 0.25, 0.9):
        expected = LOW + (HIGH - LOW) / (1 + math.exp(-(0.7 + 1.3 * stats.norm.ppf(level))))
        assert float(one.icdf(torch.tensor(level))) == pytest.approx(expected, rel=1e-5)


def test_the_support_is_the_prior_interval():
    q = _mixture()
    outside = torch.tensor([[0.0, 1.2], [-1.0, LOW]], dtype=torch.float64)
    assert bool(torch.isneginf(q.log_prob(outside)).all())
    draws = q.sample((20_000,))
    assert draws.shape == (20_000, 2) and bool(((draws > LOW) & (draws < HIGH)).all())
    assert torch.allclose(draws.mean(0), q.mean, atol=0.01)
    with pytest.raises(ValueError, match="low < high"):
        LogitNormalMixture(torch.zeros(1), torch.zeros(1), torch.ones(1), 1.0, 0.5)


def test_film_with_a_zero_condition_map_is_the_plain_mlp():
    torch.manual_seed(0)
    film = FiLMMLP((3, 8, 8, 2), condition_dim=4, activation="elu")
    torch.nn.init.zeros_(film.film.weight)
    torch.nn.init.zeros_(film.film.bias)
    plain = MLP((3, 8, 8, 2), activation="elu")
    plain.load_state_dict({f"{2 * i}.{k}": v for i, layer in enumerate(film.layers) for k, v in layer.state_dict().items()})
    x, c = torch.randn(5, 3), torch.randn(5, 4)
    assert torch.equal(film(x, c), plain(x))
    torch.nn.init.normal_(film.film.weight)
    assert not torch.allclose(film(x, c), plain(x))  # the condition now acts


# ---------------------------------------------------------------------- what each variant reads
VARIANT_CONDITIONING = {"meta": "context", "oracle": "plane", "baseline": "none"}


def _boxes(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    task = PhysicsTask(((4.0, 30.0), (8.0, 50.0)), simulations=50, context_size=5, seed=seed)
    batch = task.train_batch(0, 0, n // 2, 20, torch.Generator().manual_seed(seed))
    return batch.x, batch.context.elements[batch.context.index]  # (n, 5), (n, 5, 5)


@pytest.mark.parametrize("variant", list(VARIANT_CONDITIONING))
def test_the_seam_of_a_model_without_latents(variant):
    torch.manual_seed(1)
    model = CompiledInference.from_config(CompiledInferenceConfig(conditioning=VARIANT_CONDITIONING[variant]))
    x, context = _boxes()
    ctx = context if model.uses_context else None
    w = model.log_weights(x, ctx, 4)
    assert w.shape == (4, x.shape[0]) and torch.equal(w, w[:1].expand_as(w))  # no latents: the same weight for every K
    assert torch.equal(w, model.log_weights(x, ctx, 4, objective="training"))
    assert torch.allclose(w[0], model.posterior(x, ctx).log_prob(x[:, 2]), atol=1e-6)
    assert model.kl(x, ctx) == {}
    rep = model.representation(x, ctx)
    assert rep.shape == (x.shape[0], 1) and not rep.requires_grad and bool(((rep > LOW) & (rep < HIGH)).all())


@pytest.mark.parametrize("variant", list(VARIANT_CONDITIONING))
def test_no_variant_reads_the_query_mu_and_only_the_oracle_reads_the_plane(variant):
    torch.manual_seed(2)
    model = CompiledInference.from_config(CompiledInferenceConfig(conditioning=VARIANT_CONDITIONING[variant])).eval()
    x, context = _boxes()
    ctx = context if model.uses_context else None
    base = model.posterior(x, ctx).mean
    other_mu = x.clone()
    other_mu[:, 2] = torch.rand(x.shape[0])
    assert torch.equal(model.posterior(other_mu, ctx).mean, base)
    other_plane = x.clone()
    other_plane[:, 3:] = torch.tensor([17.0, 75.0])
    changed = not torch.equal(model.posterior(other_plane, ctx).mean, base)
    assert changed == (variant == "oracle")
    if model.uses_context:  # the context's plane columns are not read either; its order does not matter
        ctx_plane = context.clone()
        ctx_plane[..., 3:] = torch.tensor([17.0, 75.0])
        assert torch.equal(model.posterior(x, ctx_plane).mean, base)
        assert torch.allclose(model.posterior(x, context.flip(1)).mean, base, atol=1e-6)


def test_the_times_only_context_ignores_the_contexts_mu_and_the_pairs_context_reads_it():
    x, context = _boxes()
    other = context.clone()
    other[..., 2] = torch.rand(other.shape[:2])
    for features, reads in (("times", False), ("pairs", True)):
        torch.manual_seed(3)
        model = CompiledInference.from_config(CompiledInferenceConfig(context_features=features)).eval()
        assert (not torch.equal(model.posterior(x, other).mean, model.posterior(x, context).mean)) == reads


def test_the_meta_network_needs_a_context_and_wrong_shapes_are_refused():
    model = CompiledInference.from_config(CompiledInferenceConfig())
    x, _ = _boxes()
    with pytest.raises(ValueError, match="context"):
        model.log_weights(x, None)
    with pytest.raises(ValueError, match="x: expected shape"):
        model.log_weights(x[:, :3], None)
    with pytest.raises(ValueError, match="event_shape"):
        CompiledInference.from_config(CompiledInferenceConfig(), event_shape=(3,))


def test_trained_on_one_plane_the_posterior_mean_approaches_the_exact_one():
    """End to end through the one Trainer: 600 steps on a single plane bring the baseline's MSE within
    1.5× of the exact posterior's on fresh boxes of that plane (untrained it is ~10× off)."""
    torch.manual_seed(0)
    task = PhysicsTask(((6.0, 40.0),), simulations=1000, context_size=5, seed=0, fresh=True)
    model = CompiledInference.from_config(CompiledInferenceConfig(conditioning="none", hidden_dim=32))
    config = TrainConfig(lr=3e-3, lr_schedule="cosine", batch_size=256, epochs=1000, max_steps=600, context_pool_size=20,
                         validate_every=600, val_examples=50, val_importance_samples=1, val_pool_size=20, device="cpu")
    import tempfile

    with tempfile.TemporaryDirectory() as run:
        Trainer(model, task, config, run).fit(progress=False)
    out = InclinedPlane().simulate(torch.tensor([6.0]), torch.tensor([40.0]), 4000, torch.Generator().manual_seed(99))
    x = torch.stack([torch.where(out.slid[0], out.time[0], torch.zeros(4000, dtype=torch.float64)), out.slid[0].double(),
                     out.mu[0], torch.full((4000,), 6.0, dtype=torch.float64), torch.full((4000,), 40.0, dtype=torch.float64)], 1)
    with torch.no_grad():
        mean = model.posterior(x.float(), None).mean.double()
    bayes = exact_posterior(out.time[0], out.slid[0], torch.full((4000,), 6.0), torch.full((4000,), 40.0))
    mse, floor = float(((mean - out.mu[0]) ** 2).mean()), float(((bayes.mean - out.mu[0]) ** 2).mean())
    assert mse < 1.5 * floor, (mse, floor)


# ---------------------------------------------------------------------- the task with fresh simulations
def test_fresh_batches_are_new_boxes_of_each_plane_and_seeded():
    planes = ((3.0, 30.0), (9.0, 60.0))
    task = PhysicsTask(planes, simulations=100, context_size=4, seed=0, fresh=True)
    g = torch.Generator().manual_seed(5)
    first, second = task.train_batch(0, 0, 8, 12, g), task.train_batch(0, 1, 8, 12, g)
    assert not torch.equal(first.x, second.x)
    again = task.train_batch(0, 0, 8, 12, torch.Generator().manual_seed(5))
    assert torch.equal(first.x, again.x) and torch.equal(first.context.index, again.context.index)
    stored = task._train.reshape(-1, len(FIELDS))
    for batch in (first, second):
        assert not bool((batch.x[:, None, 2] == stored[None, :, 2]).any())  # never a stored box
        for d, (length, angle) in enumerate(planes):  # queries and their contexts from their own plane
            rows = batch.decoder_index == d
            for boxes in (batch.x[rows], batch.context.elements[batch.context.index[rows]].reshape(-1, len(FIELDS))):
                assert bool((boxes[:, 3] == length).all()) and bool((boxes[:, 4] == angle).all())
                slid = boxes[:, 1] == 1
                expected = descent_time(torch.tensor(length), torch.tensor(angle), boxes[slid, 2].double())
                assert float((boxes[slid, 0].double() - expected).abs().max()) < 6 * 0.02


def test_fresh_training_needs_no_stored_boxes_beyond_validation():
    from metavae.errors import ConfigError

    config = TrainConfig(batch_size=150, context_pool_size=200, val_examples=5, val_pool_size=10)
    PhysicsTask(((3.0, 30.0),), simulations=100, context_size=4, fresh=True).check(config)
    with pytest.raises(ConfigError, match="train.batch_size"):
        PhysicsTask(((3.0, 30.0),), simulations=100, context_size=4, fresh=False).check(config)


@pytest.mark.parametrize("fresh", [False, True])
def test_a_box_is_never_in_its_own_context_set(fresh):
    """Its μ would be an input. Checked on every kind of batch: training (every step of an epoch),
    validation, test and a held-out plane's probe batch with the pool as large as the plane."""
    task = PhysicsTask(((3.0, 30.0), (9.0, 60.0)), simulations=60, context_size=5, seed=1, fresh=fresh)
    gen = torch.Generator().manual_seed(0)
    batches = [task.train_batch(0, step, 10, 40, gen) for step in range(task.batches_per_epoch(10))]
    batches += [task.validation_batch(6, 6), task.test_batch(20, 60),
                task.distribution_batch(task.held_out_names()[0], "test", None, 60, gen)]
    for batch in batches:
        members = batch.context.elements[batch.context.index]  # (B, N, 5)
        assert not bool((members == batch.x[:, None, :]).all(-1).any())
        assert not bool((members[..., 2] == batch.x[:, None, 2]).any())


# ---------------------------------------------------------------------- the cosine schedule
def test_the_cosine_learning_rate_and_that_the_optimizer_uses_it(tmp_path):
    task = PhysicsTask(((4.0, 30.0),), simulations=200, context_size=4, seed=0)
    model = CompiledInference.from_config(CompiledInferenceConfig(conditioning="none", hidden_dim=8))
    config = TrainConfig(lr=0.01, lr_schedule="cosine", lr_final_fraction=0.1, batch_size=20, epochs=100, max_steps=40,
                         context_pool_size=8, validate_every=40, val_examples=10, val_pool_size=8, device="cpu")
    trainer = Trainer(model, task, config, tmp_path / "run")
    assert trainer.learning_rate(0) == pytest.approx(0.01)
    assert trainer.learning_rate(20) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
    assert trainer.learning_rate(40) == pytest.approx(0.001)
    assert trainer.learning_rate(10) == pytest.approx(0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))))
    seen = []
    original = trainer.optimizer.step

    def step(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return original(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.fit(progress=False)
    assert seen == pytest.approx([trainer.learning_rate(s) for s in range(40)])


def test_a_cosine_run_resumes_but_is_not_extended():
    cosine = physics.PhysicsConfig().for_run("meta")
    longer = physics.PhysicsConfig.from_dict({"train": {"max_steps": 9000}}).for_run("meta")
    assert "cannot" not in (resume_conflict(cosine, cosine) or "")
    assert resume_conflict(cosine, cosine) is None
    assert "resumed but not extended" in resume_conflict(cosine, longer)
    constant = physics.PhysicsConfig.from_dict({"train": {"lr_schedule": "constant"}}).for_run("meta")
    constant_longer = physics.PhysicsConfig.from_dict({"train": {"lr_schedule": "constant", "max_steps": 9000}}).for_run("meta")
    assert resume_conflict(constant, constant_longer) is None


# ---------------------------------------------------------------------- the experiment's config
def test_the_shipped_default_config_is_the_built_in_default():
    shipped = physics.load_physics_config("configs/physics/default.yaml")
    assert shipped == physics.PhysicsConfig()
    smoke = physics.load_physics_config("configs/physics/smoke.yaml")
    assert smoke.train.max_steps == 200 and smoke.train.lr_schedule == "cosine" and smoke.data.context_size == 20


def test_a_partial_train_section_keeps_the_physics_defaults_and_bad_keys_are_named():
    from metavae.errors import ConfigError

    config = physics.load_physics_config(None, [("train.lr", 1e-3)])
    assert config.train.lr == 1e-3 and config.train.batch_size == 64 and config.train.lr_schedule == "cosine"
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        physics.load_physics_config(None, [("train.lrr", 1e-3)])
    with pytest.raises(ConfigError, match="unknown variant 'metaa'"):
        physics.load_physics_config(None, [("models", ["metaa"])])
    with pytest.raises(ConfigError, match="evaluation.pool_size"):
        physics.load_physics_config(None, [("evaluation.pool_size", 5)])
    with pytest.raises(ConfigError, match="model.conditioning"):
        physics.load_physics_config(None, [("model.conditioning", "planes")])
    with pytest.raises(ConfigError, match="unknown config key 'variant'"):
        physics.load_physics_config(None, [("variant", "meta")])
    with pytest.raises(ConfigError, match="simulator's prior"):
        physics.load_physics_config(None, [("model.mu_low", 0.01)])


# ---------------------------------------------------------------------- evaluation
def test_evaluation_rows_against_an_independent_computation():
    """Ratios, MSEs and coverages of evaluate_planes recomputed here from the same boxes by another
    path: intervals from the model's quantiles (icdf) rather than its CDF at μ."""
    config = physics.PhysicsConfig.from_dict({"evaluation": {"simulations": 60, "pool_size": 60}})
    torch.manual_seed(4)
    models = {"oracle": CompiledInference.from_config(config.for_run("oracle").model).eval()}
    planes = ((2.0, 20.0), (10.0, 45.0), (19.0, 80.0))
    rows = physics.evaluate_planes(models, config, planes)
    task = PhysicsTask(planes, simulations=60, context_size=20, seed=config.evaluation.seed)
    for row, (length, angle) in zip(rows, planes):
        assert (row["length"], row["angle"]) == (length, angle)
        assert row["in_training_range"] == ((length, angle) in ((2.0, 20.0), (10.0, 45.0)))
        x = task._part(f"L={length:g},A={angle:g}", "test")
        mu = x[:, 2].double()
        q = models["oracle"].posterior(x, None)
        with torch.no_grad():
            mse = float(((q.mean.double() - mu) ** 2).mean())
            lo, hi = q.icdf(torch.tensor([[0.05], [0.95]])).double()
        assert row["mse_oracle"] == pytest.approx(mse, rel=1e-6)
        assert row["coverage90_oracle"] == pytest.approx(float(((mu >= lo) & (mu <= hi)).double().mean()), abs=1 / 60 + 1e-9)
        slid = x[:, 1] == 1
        bayes = exact_posterior(torch.where(slid, x[:, 0].double(), torch.tensor(math.inf, dtype=torch.float64)), slid,
                                torch.full((60,), length), torch.full((60,), angle))
        assert row["mse_bayes"] == pytest.approx(float(((bayes.mean - mu) ** 2).mean()), rel=1e-9)
        assert row["ratio_oracle"] == pytest.approx(row["mse_oracle"] / row["mse_bayes"])


def test_the_physics_command_end_to_end_then_reuses_its_runs(tmp_path, capsys):
    from metavae.cli import main

    out = tmp_path / "physics"
    args = ["physics", "--out", str(out), "--no-progress", "--set", "train.max_steps=6", "--set", "train.validate_every=3",
            "--set", "train.checkpoint_every=3", "--set", "data.simulations=200", "--set", "train.val_examples=10", "--set", "train.val_pool_size=20",
            "--set", "evaluation.simulations=20", "--set", "evaluation.pool_size=20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "median ratio" in printed and "baseline" in printed
    header = (out / "planes.csv").read_text().splitlines()[0].split(",")
    for column in ("length", "angle", "mse_meta", "mse_oracle", "mse_baseline", "mse_bayes", "coverage50_meta", "coverage90_meta"):
        assert column in header
    rows = physics.read_planes_csv(out / "planes.csv")
    assert len(rows) == 304 and {(r["length"], r["angle"]) for r in rows} == {(float(L), float(A)) for L in range(1, 20)
                                                                                for A in range(5, 81, 5)}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["planes_in_training_range"] == 81 and set(summary["variants"]) == {"meta", "oracle", "baseline"}
    assert summary["variants"]["meta"]["median_ratio_all"] == pytest.approx(float(np.median([r["ratio_meta"] for r in rows])), rel=1e-4)
    for png in ("heatmaps.png", "ratios.png"):
        assert (out / png).stat().st_size > 10_000
    files = [out / v / name for v in ("meta", "oracle", "baseline") for name in ("finished.json", "checkpoints/best.pt",
                                                                               "checkpoints/last.pt", "metrics.jsonl")]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(args) == 0  # the second time: evaluated again, nothing retrained, resumed or rewritten
    assert stamps == [f.stat().st_mtime_ns for f in files]
    assert main(["physics", "--out", str(out), "--set", "train.lrr=1"]) == 2
    assert "unknown config key 'train.lrr'" in capsys.readouterr().err
