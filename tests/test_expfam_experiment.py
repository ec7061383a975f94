"""The sufficient-statistics experiment: its runs, config, evaluation rows against an independent
computation, and the `expfam` command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metavae.config.loading import parse_overrides
from metavae.data import expfam as families
from metavae.errors import ConfigError
from metavae.experiments import expfam
from metavae.models.family_decoder import sufficient_statistic_model

TINY = [("train.max_steps", 6), ("train.validate_every", 3), ("train.checkpoint_every", 3), ("evaluation.steps", 3),
        ("evaluation.observations", 8), ("data.observations", 60), ("data.distributions", 3), ("train.val_pool_size", 6),
        ("train.val_examples", 4), ("train.context_pool_size", 12), ("train.batch_size", 4), ("data.context_size", 3),
        ("evaluation.read_out_steps", 5), ("evaluation.read_out_distributions", 2)]


def test_the_runs_of_both_experiments():
    config = expfam.ExpFamConfig()
    runs = expfam.runs(config)
    assert set(runs) == {"single_gaussian_metavae", "single_lognormal_metavae", "single_exponential_metavae",
                         "single_gaussian_vae", "single_lognormal_vae", "single_exponential_vae", "many_metavae"}
    for family, (low, high) in expfam.TRAINED_FAMILIES.items():
        thetas = [t for f, t in runs[f"single_{family}_metavae"]]
        assert len(thetas) == 30 and all(f == family for f, _ in runs[f"single_{family}_metavae"])
        assert all(low <= t <= high for t in thetas) and len(set(thetas)) == 30
        assert runs[f"single_{family}_vae"] == [(family, (low + high) / 2)]
    assert runs["many_metavae"] == [d for f in expfam.TRAINED_FAMILIES for d in runs[f"single_{f}_metavae"]]
    only_many = expfam.load_expfam_config(None, [("experiments", ["many"])])
    assert not any(name.endswith("_vae") for name in expfam.runs(only_many))


def test_the_config_defaults_merging_and_errors():
    assert expfam.load_expfam_config("configs/expfam/default.yaml") == expfam.ExpFamConfig()
    config = expfam.load_expfam_config(None, [("train.lr", 3e-4)])
    assert config.train.lr == 3e-4 and config.train.batch_size == 20 and config.train.lr_schedule == "cosine"
    with pytest.raises(ConfigError, match="unknown config key 'train.lrr'"):
        expfam.load_expfam_config(None, [("train.lrr", 1)])
    with pytest.raises(ConfigError, match="experiments"):
        expfam.load_expfam_config(None, [("experiments", ["both"])])
    with pytest.raises(ConfigError, match="evaluation.ranges.exponential"):
        expfam.load_expfam_config(None, [("evaluation.ranges", {"exponential": [-1.0, 2.0]})])
    with pytest.raises(ConfigError, match="unknown config key 'run'"):
        expfam.load_expfam_config(None, [("run", "many_metavae")])
    dropped = expfam.load_expfam_config(None, parse_overrides(["evaluation.unseen.beta=null", "evaluation.ranges.lognormal=null"]))
    assert sorted(dropped.evaluation.unseen) == ["laplace", "weibull"]
    assert sorted(dropped.evaluation.ranges) == ["exponential", "gaussian"]
    with pytest.raises(ConfigError, match="evaluation.unseen"):
        expfam.load_expfam_config(None, [("evaluation.unseen", [1, 2])])


def test_a_task_holds_the_runs_distributions():
    config = expfam.load_expfam_config(None, TINY)
    task = expfam.build_task(config, "single_exponential_metavae")
    names = task.distribution_names()
    thetas = [t for _, t in expfam.runs(config)["single_exponential_metavae"]]
    assert names == [f"exponential:{t:.4f}" for t in thetas] and task.event_shape == (20, 2)
    for name, theta in zip(names, thetas):  # each distribution's data are its own exponential's (mean 1/rate)
        x = task.distribution_batch(name, "train", None, 20, torch.Generator().manual_seed(0)).x
        assert float(x.double().mean()) == pytest.approx(1 / theta, rel=0.1)


def test_evaluation_rows_against_an_independent_computation():
    config = expfam.load_expfam_config(None, TINY)
    torch.manual_seed(0)
    model = sufficient_statistic_model("vae", ["lognormal"])
    rows = expfam.evaluate({"single_lognormal_vae": model}, config)
    estimators = {r["estimator"] for r in rows}
    assert estimators == {"exact_posterior", "mle_x", "mle_x_and_context", "single_lognormal_vae"}
    assert {r["family"] for r in rows if r["estimator"] == "single_lognormal_vae"} == {"lognormal"}  # only its family
    assert all(np.isfinite(r["mse"]) for r in rows)
    ev = config.evaluation
    row = next(r for r in rows if r["estimator"] == "mle_x" and r["family"] == "gaussian" and r["theta"] == 0.0)
    x = families.sample("gaussian", [0.0], 8, 20, expfam.seed_of(ev.seed, 0, 1, 0))[0].double()  # the sweep's middle point
    assert row["mse"] == pytest.approx(float((x.mean(1) ** 2).mean()), rel=1e-9)
    pooled = next(r for r in rows if r["estimator"] == "mle_x_and_context" and r["family"] == "gaussian" and r["theta"] == 0.0)
    assert pooled["mse"] < row["mse"]  # four times the points (x and 3 context observations)
    exact = next(r for r in rows if r["estimator"] == "exact_posterior" and r["family"] == "gaussian" and r["theta"] == 0.0)
    shrink = (20 / 0.1) / (1 + 20 / 0.1)  # the conjugate posterior mean is the sample mean shrunk toward the prior's 0
    assert exact["mse"] == pytest.approx(float(((shrink * x.mean(1)) ** 2).mean()), rel=1e-9)
    lognormal = next(r for r in rows if r["estimator"] == "single_lognormal_vae" and r["theta"] == 0.0)
    x = families.sample("lognormal", [0.0], 8, 20, expfam.seed_of(ev.seed, 1, 1, 0))[0]
    with torch.no_grad():
        loc = model.posterior(x, None).mean.double()  # identity link: the mean of θ is the mean of z
    assert lognormal["mse"] == pytest.approx(float((loc**2).mean()), rel=1e-6)
    for r in rows:
        low, high = expfam.TRAINED_FAMILIES.get(r["family"], (1.0, 0.0))  # an unseen family has no training range
        assert r["in_training_range"] == (low <= r["theta"] <= high)
    assert {r["family"] for r in rows} == {"gaussian", "lognormal", "exponential", "beta", "weibull", "laplace"}


def test_the_softplus_estimate_is_the_mean_of_theta_under_q():
    torch.manual_seed(1)
    model = sufficient_statistic_model("vae", ["exponential"])
    x = families.sample("exponential", [1.5], 4, 20, 0)[0]
    got = expfam.estimate(model, "exponential", x, None)
    q = model.posterior(x, None)
    draws = torch.nn.functional.softplus(q.base_dist.loc.double() + q.base_dist.scale.double()
                                         * torch.randn(200_000, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
    assert torch.allclose(got, draws.mean(0), atol=3e-3)


def test_the_expfam_command_end_to_end_then_reuses_its_runs(tmp_path, capsys):
    from metavae.cli import main

    out = tmp_path / "expfam"
    args = ["expfam", "--out", str(out), "--no-progress"] + [a for k, v in TINY for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(args) == 0
    assert "max ratio in range" in capsys.readouterr().out
    lines = (out / "sweep.csv").read_text().splitlines()
    assert lines[0] == "experiment,estimator,family,theta,in_training_range,mse"
    assert {ln.split(",")[1] for ln in lines[1:]} >= {"many_metavae", "single_gaussian_metavae", "single_gaussian_vae",
                                                     "exact_posterior", "mle_x", "mle_x_and_context"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["training"]) == set(expfam.runs(expfam.load_expfam_config(None, TINY)))
    assert (out / "sweeps.png").stat().st_size > 10_000
    stamps = [(out / run / "checkpoints" / "best.pt").stat().st_mtime_ns for run in summary["training"]]
    assert main(args) == 0
    assert stamps == [(out / run / "checkpoints" / "best.pt").stat().st_mtime_ns for run in summary["training"]]


class _Stub(torch.nn.Module):
    """An "encoder" whose q(z | x) is the exact (conjugate, Gaussian) posterior of the Gaussian family
    distorted by z ↦ 0.5 z + 0.3: mean 0.5·m + 0.3, standard deviation 0.5·s."""

    uses_context = False

    def posterior(self, x, context):
        exact = families.exact_posterior("gaussian", x)
        loc, scale = 0.5 * exact.mean + 0.3, 0.5 * exact.variance.sqrt()
        return torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)


def test_the_read_out_for_an_unseen_family_undoes_an_affine_distortion_of_the_exact_posterior():
    """Fitted by the family's ELBO alone (no θ shown): the ELBO is maximised exactly when q is the
    posterior, which the affine read-out can restore here, so it must find a = 2, b = −0.6."""
    config = expfam.load_expfam_config(None, [("evaluation.read_out_steps", 600)])
    a, b = expfam.fit_read_out(_Stub(), "gaussian", config)
    assert torch.allclose(a, torch.full((2,), 2.0, dtype=torch.float64), atol=0.05), a
    assert torch.allclose(b, torch.full((2,), -0.6, dtype=torch.float64), atol=0.05), b


def test_each_distributions_data_are_the_same_in_every_run_that_trains_on_it():
    """Keyed by (family, θ): the MetaVAE over 90 sees the single-family runs' very data; families differ."""
    config = expfam.load_expfam_config(None, TINY)
    many, single = expfam.build_task(config, "many_metavae"), expfam.build_task(config, "single_lognormal_metavae")
    name = single.distribution_names()[1]
    g = torch.Generator().manual_seed(0)
    assert torch.equal(many.distribution_batch(name, "train", None, 20, g).x, single.distribution_batch(name, "train", None, 20, g).x)
    gaussian = expfam.build_task(config, "single_gaussian_metavae")
    first = gaussian.distribution_batch(gaussian.distribution_names()[0], "train", None, 20, g).x
    other = single.distribution_batch(single.distribution_names()[0], "train", None, 20, g).x
    assert not np.allclose(np.log(other.numpy()), first.numpy() - first.numpy().mean() + np.log(other.numpy()).mean())
