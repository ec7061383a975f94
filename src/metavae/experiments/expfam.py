"""Learning sufficient statistics of exponential families (paper §4, Figs. 2–3), against exact references.

The verbs, as for every experiment set: :func:`build_task` (a :class:`~metavae.data.DatasetFamily`
of sampled distributions), :func:`build_model`, :func:`train`, :func:`evaluate` (the sweeps),
:func:`report` (``metavae expfam``).

Runs (:func:`runs`), each an ordinary run directory under ``<out>/<run>/``:

- ``single_<family>_metavae``: a MetaVAE with parameter-free decoders amortized over 30
  distributions of one family (θ uniform over the family's training range);
- ``single_<family>_vae``: the paper's baseline, a VAE trained on one distribution of the family
  (θ at the middle of its range);
- ``many_metavae``: one MetaVAE over all 90 distributions (30 of each family), compared with the
  three single-family MetaVAEs.

Evaluation sweeps θ finely beyond the training range. At each θ: ``evaluation.observations``
fresh observations x and, for each, a context D of ``data.context_size`` observations of the same
distribution; the model's estimate is the mean of θ = link(z) under q(z | D, x) (Gauss–Hermite
over each coordinate's Gaussian); the references on the same data are the exact posterior mean
of θ given x (what the training objective aims at: the ELBO of each x is maximised by
q(z | D, x) = p(z | x) whatever D, reached exactly where p(z | x) is Gaussian — the Gaussian and
log-normal families with their identity links — and approached within the diagonal-Gaussian q
otherwise), the maximum-likelihood estimate from x, and from x ∪ D (what a statistic of every
point the network is shown could reach; a measured reference, not a bound). A network that uses
D can beat the exact posterior given x alone. MSE = the mean of (θ̂_d − θ)² over observations and
both coordinates. Every distribution's data come from a seed keyed by (family, θ, part) through
``numpy.random.SeedSequence``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metavae.config.loading import read_config_file, require, set_dotted
from metavae.config.schema import RunOfExperiment, TrainConfig
from metavae.data import expfam
from metavae.data.dataset_family import DatasetFamily
from metavae.errors import ConfigError
from metavae.experiments.common import environment, finished_record, output_directory
from metavae.files import atomic_write_json, atomic_write_text
from metavae.models.family_decoder import sufficient_statistic_model
from metavae.training.checkpoint import load_checkpoint, load_model_state
from metavae.training.devices import module_device, resolve_device
from metavae.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)

__all__ = ["ExpFamConfig", "ExpFamDataConfig", "ExpFamEvaluationConfig", "TRAINED_FAMILIES", "runs", "build_task",
           "build_model", "train", "load_run", "estimate", "evaluate", "report", "load_expfam_config", "format_summary"]

#: the families trained on, with the paper's training ranges of θ
TRAINED_FAMILIES: dict[str, tuple[float, float]] = {"gaussian": (-5.0, 5.0), "lognormal": (-2.0, 2.0), "exponential": (0.5, 3.0)}


@dataclass(frozen=True)
class ExpFamDataConfig:
    """``distributions`` per family, θ uniform over its training range; ``observations`` (train) and
    ``test_observations`` per distribution, each a set of ``points`` 2-D points; contexts of
    ``context_size`` observations; ``seed`` draws the θ and the data."""

    distributions: int = 30
    observations: int = 1000
    test_observations: int = 100
    points: int = 20
    context_size: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("distributions", "observations", "test_observations", "points", "context_size"):
            require(getattr(self, key) >= 1, f"data.{key}", f"must be ≥ 1, got {getattr(self, key)}")
        require(self.observations > self.context_size, "data.observations", "must exceed data.context_size")


@dataclass(frozen=True)
class ExpFamEvaluationConfig:
    """The sweep: θ from ``low`` to ``high`` in ``steps`` points per family — ``ranges`` for the trained
    families (defaults extend each training range on both sides), ``unseen`` for the families no model
    is trained on — with ``observations`` per θ.

    Reading a parameter off for an unseen family: the encoder is frozen and the unseen family's
    likelihood becomes the decoder; an affine map per coordinate, z' = a ⊙ z + b, is fitted by
    maximising that decoder's ELBO on ``read_out_distributions`` distributions of the family (θ
    evenly over ``read_out_range``, 100 observations each; no θ is shown to it), ``read_out_steps``
    Adam steps. θ is then the mean of link(z') as for the trained families.

    A family set to null is left out of the sweep (``--set evaluation.unseen.beta=null``): mappings
    merge with the defaults, so leaving a key out keeps it.
    """

    observations: int = 200
    steps: int = 41
    seed: int = 20_200_207
    ranges: dict = field(default_factory=lambda: {"gaussian": [-10.0, 10.0], "lognormal": [-4.0, 4.0],
                                                  "exponential": [0.25, 6.0]})
    unseen: dict = field(default_factory=lambda: {"beta": [0.5, 8.0], "weibull": [0.5, 8.0], "laplace": [0.5, 8.0]})
    read_out_range: tuple[float, float] = (0.5, 5.0)
    read_out_distributions: int = 10
    read_out_steps: int = 300

    def __post_init__(self) -> None:
        for key in ("ranges", "unseen"):
            require(isinstance(getattr(self, key), dict), f"evaluation.{key}", "expected a mapping of family: [low, high]")
            object.__setattr__(self, key, {k: v for k, v in getattr(self, key).items() if v is not None})
        require(self.observations >= 1 and self.steps >= 2, "evaluation", "observations ≥ 1 and steps ≥ 2 needed")
        unseen = [f for f in expfam.EXPFAM_FAMILIES if f not in TRAINED_FAMILIES]
        for name in self.unseen:
            require(name in unseen, f"evaluation.unseen.{name}", f"choose among {', '.join(unseen)}")
        require(0 < self.read_out_range[0] < self.read_out_range[1], "evaluation.read_out_range", "need 0 < low < high")
        require(self.read_out_distributions >= 1 and self.read_out_steps >= 1, "evaluation.read_out_steps", "must be ≥ 1")
        for name, span in {**self.ranges, **self.unseen}.items():
            where = "ranges" if name in self.ranges else "unseen"
            require(name in TRAINED_FAMILIES or where == "unseen", f"evaluation.ranges.{name}",
                    f"choose among {', '.join(TRAINED_FAMILIES)}")
            require(isinstance(span, (list, tuple)) and len(span) == 2 and span[0] < span[1], f"evaluation.{where}.{name}",
                    f"expected [low, high] with low < high, got {span!r}")
            if expfam.EXPFAM_FAMILIES[name].link == "softplus":
                require(span[0] > 0, f"evaluation.{where}.{name}", "a positive parameter's sweep must start above 0")


def _default_train() -> TrainConfig:
    return TrainConfig(lr=1e-3, lr_schedule="cosine", batch_size=20, epochs=1000, max_steps=1500, context_pool_size=30,
                       validate_every=500, checkpoint_every=500, val_examples=50, val_importance_samples=10, val_pool_size=30)


@dataclass(frozen=True)
class ExpFamConfig(RunOfExperiment):
    """The whole experiment; each run records it with ``run`` set. ``experiments``: ``single``
    and/or ``many``; ``hidden_dim``/``summary_dim``: the encoders' sizes; ``linear_path``: the
    encoder meant to extrapolate (see :func:`~metavae.models.family_decoder.sufficient_statistic_model`)."""

    RUN_FIELD: ClassVar[str] = "run"
    TRAINING_KEYS: ClassVar[tuple[str, ...]] = ("data", "hidden_dim", "summary_dim", "linear_path", "train")

    name: str = "expfam"
    data: ExpFamDataConfig = field(default_factory=ExpFamDataConfig)
    hidden_dim: int = 64
    summary_dim: int = 64
    linear_path: bool = False
    train: TrainConfig = field(default_factory=_default_train)
    evaluation: ExpFamEvaluationConfig = field(default_factory=ExpFamEvaluationConfig)
    experiments: tuple[str, ...] = ("single", "many")
    run: str = field(default="", metadata={"internal": True})

    def __post_init__(self) -> None:
        require(all(e in ("single", "many") for e in self.experiments) and self.experiments, "experiments",
                f"choose single and/or many, got {list(self.experiments)}")
        require(self.hidden_dim >= 1 and self.summary_dim >= 1, "hidden_dim", "sizes must be ≥ 1")
        require(self.run in ("", *runs(self)), "run", f"unknown run {self.run!r}")

    def for_run(self, run: str) -> ExpFamConfig:
        """This config as the training run ``run`` (one of :func:`runs`)."""
        if run not in runs(self):
            raise ConfigError(f"unknown run {run!r}; this config has {', '.join(runs(self))}")
        return replace(self, run=run)


def load_expfam_config(path: str | Path | None, overrides: list[tuple[str, Any]] = ()) -> ExpFamConfig:
    raw = read_config_file(path) if path is not None else {}
    for key, value in overrides:
        set_dotted(raw, key, value)
    if "run" in raw:
        raise ConfigError("unknown config key 'run' (set by metavae for each run; choose runs with experiments)")
    return ExpFamConfig.from_dict(raw)


def seed_of(*keys: int) -> int:
    """A seed for the data named by ``keys`` (e.g. base seed, family, distribution, part), from
    ``numpy``'s ``SeedSequence``: distinct keys give independent streams, whatever the config's order."""
    return int(np.random.SeedSequence([int(k) & (2**64 - 1) for k in keys]).generate_state(1)[0])  # negatives as two's complement


def _family_id(family: str) -> int:
    return list(expfam.EXPFAM_FAMILIES).index(family)


def _thetas(family: str, config: ExpFamConfig) -> list[float]:
    low, high = TRAINED_FAMILIES[family]
    rng = np.random.default_rng(seed_of(config.data.seed, _family_id(family), 0xE7A))
    return sorted(float(t) for t in rng.uniform(low, high, config.data.distributions))


def runs(config: ExpFamConfig) -> dict[str, list[tuple[str, float]]]:
    """Run name → its training distributions ``[(family, θ), …]``."""
    out: dict[str, list[tuple[str, float]]] = {}
    for family, (low, high) in TRAINED_FAMILIES.items():  # the single-family MetaVAEs serve both experiments
        out[f"single_{family}_metavae"] = [(family, t) for t in _thetas(family, config)]
        if "single" in config.experiments:
            out[f"single_{family}_vae"] = [(family, (low + high) / 2)]
    if "many" in config.experiments:
        out["many_metavae"] = [d for family in TRAINED_FAMILIES for d in out[f"single_{family}_metavae"]]
    return out


def build_task(config: ExpFamConfig, run: str) -> DatasetFamily:
    """The run's distributions as a DatasetFamily (train and test parts sampled from ``data.seed``)."""
    dists = runs(config)[run]
    d = config.data
    # a distribution's data are keyed by (family, θ): the MetaVAE over 90 sees exactly the single-family runs' data
    keys = [(d.seed, _family_id(f), int(round(t * 1e6))) for f, t in dists]
    train = [expfam.sample(f, [t], d.observations, d.points, seed=seed_of(*k, 0))[0] for (f, t), k in zip(dists, keys)]
    test = [expfam.sample(f, [t], max(d.test_observations, d.context_size), d.points, seed=seed_of(*k, 1))[0]
            for (f, t), k in zip(dists, keys)]
    return DatasetFamily(train, test, names=[f"{f}:{t:.4f}" for f, t in dists], context_size=d.context_size,
                         seed=config.train.seed, value_range=None)


def build_model(config: ExpFamConfig, run: str) -> torch.nn.Module:
    torch.manual_seed(config.train.seed)
    kind = "vae" if run.endswith("_vae") else "metavae"
    return sufficient_statistic_model(kind, [f for f, _ in runs(config)[run]], config.hidden_dim, config.summary_dim,
                                      config.data.points, config.linear_path)


def train(config: ExpFamConfig, run: str, run_dir: Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> FitResult:
    cfg = config.for_run(run)
    task = build_task(cfg, run)
    task.check(cfg.train)
    model = build_model(cfg, run)
    log.info("expfam: training %s on %d distribution(s) into %s", run, task.num_decoders, run_dir)
    return Trainer(model, task, cfg, run_dir).fit(resume=resume, progress=progress, overwrite=overwrite)


def load_run(run_dir: Path) -> tuple[ExpFamConfig, torch.nn.Module]:
    path = Path(run_dir) / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    config = ExpFamConfig.from_dict(payload["config"])
    model = build_model(config, config.run)
    load_model_state(model, payload["state_dict"], path)
    return config, model.to(resolve_device(config.train.device, fallback=True)).eval()  # the CPU if that is not here


_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(32)


def estimate(model: torch.nn.Module, family: str, x: torch.Tensor, context: torch.Tensor | None,
             read_out: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``(M, 2)``: the mean of θ = link(z) under the model's q(z | D, x) (Gauss–Hermite per coordinate),
    through the affine ``read_out`` (a, b) for a family the model was not trained on."""
    device = module_device(model)
    with torch.no_grad():
        q = model.posterior(x.to(device), None if context is None else context.to(device))
        loc, scale = q.base_dist.loc.double().cpu(), q.base_dist.scale.double().cpu()  # (M, 2)
        if read_out is not None:
            a, b = (v.double() for v in read_out)
            loc, scale = a * loc + b, a.abs() * scale
    nodes = torch.as_tensor(_NODES, dtype=torch.float64)
    weights = torch.as_tensor(_WEIGHTS / _WEIGHTS.sum(), dtype=torch.float64)
    return (expfam.link(family, loc[..., None] + scale[..., None] * nodes) * weights).sum(-1)


def _sweep(family: str, config: ExpFamConfig) -> np.ndarray:
    low, high = {**config.evaluation.ranges, **config.evaluation.unseen}[family]
    return np.linspace(low, high, config.evaluation.steps)


def _with_contexts(family: str, theta: float, observations: int, config: ExpFamConfig, *key: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``observations`` fresh observations at θ and, for each, a context of other observations at θ
    (drawn from a separate pool), all seeded by ``key``."""
    d = config.data
    x = expfam.sample(family, [theta], observations, d.points, seed_of(*key, 0))[0]  # (M, P, 2)
    pool = expfam.sample(family, [theta], max(observations, d.context_size), d.points, seed_of(*key, 1))[0]
    pick = torch.rand(observations, pool.shape[0], generator=torch.Generator().manual_seed(seed_of(*key, 2)))
    pick = pick.argsort(1)[:, : d.context_size]
    return x, pool[pick]  # (M, N, P, 2): each x's own context, never x itself


def fit_read_out(model: torch.nn.Module, family: str, config: ExpFamConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, b)``, ``(2,)`` each: the affine map z' = a ⊙ z + b under which the frozen encoder's
    q(z | D, x) best explains ``family``'s data by the ELBO with that family's likelihood as the
    decoder (see :class:`ExpFamEvaluationConfig`). Unsupervised: no true θ is used."""
    ev = config.evaluation
    data = [_with_contexts(family, float(t), 100, config, ev.seed, _family_id(family), i, 0xFE)
            for i, t in enumerate(np.linspace(*ev.read_out_range, ev.read_out_distributions))]
    x, context = torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data])
    device = module_device(model)
    with torch.no_grad():
        q = model.posterior(x.to(device), context.to(device) if model.uses_context else None)
        loc, scale = q.base_dist.loc.double().cpu(), q.base_dist.scale.double().cpu()
    a = torch.ones(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([a, b], lr=0.05)
    generator = torch.Generator().manual_seed(ev.seed)
    for _ in range(ev.read_out_steps):
        m, sd = a * loc + b, a.abs() * scale + 1e-6
        z = m + sd * torch.randn(4, *loc.shape, dtype=torch.float64, generator=generator)  # (4, M, 2)
        kl = 0.5 * (m * m + sd * sd - 1 - 2 * sd.log()).sum(-1)  # KL(N(m, sd²) ‖ N(0, I)) per observation
        loss = -(expfam.log_likelihood(family, x.double(), z).mean(0) - kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return a.detach(), b.detach()


def evaluate(models: Mapping[str, torch.nn.Module], config: ExpFamConfig) -> list[dict[str, Any]]:
    """Rows ``(experiment, estimator, family, theta, in_training_range, mse)`` over each family's sweep:
    every model in ``models`` (name → model) that was trained on the family, and the references
    ``exact_posterior`` (given x), ``mle_x`` and ``mle_x_and_context`` on the same data."""
    ev = config.evaluation
    rows = []
    run_families = runs(config)
    families = [*ev.ranges, *ev.unseen]
    metavaes = [name for name in models if name.endswith("_metavae")]
    read_outs = {(name, family): fit_read_out(models[name], family, config) for family in ev.unseen for name in metavaes}
    for family in families:
        low, high = TRAINED_FAMILIES.get(family, (math.inf, -math.inf))  # an unseen family has no training range
        for t_index, theta in enumerate(_sweep(family, config)):
            x, context = _with_contexts(family, float(theta), ev.observations, config, ev.seed, _family_id(family), t_index)
            base = {"family": family, "theta": float(theta), "in_training_range": bool(low <= theta <= high)}
            estimates = {
                "exact_posterior": expfam.exact_posterior(family, x).mean,
                "mle_x": expfam.mle(family, x),
                "mle_x_and_context": expfam.mle(family, torch.cat([x[:, None], context], 1).flatten(1, 2)),
            }
            for name, model in models.items():
                ctx = context if model.uses_context else None
                if family in {f for f, _ in run_families[name]}:
                    estimates[name] = estimate(model, family, x, ctx)
                elif (name, family) in read_outs:
                    estimates[name] = estimate(model, family, x, ctx, read_outs[(name, family)])
            for name, value in estimates.items():
                rows.append({**base, "estimator": name, "mse": float(((value.double() - theta) ** 2).mean())})
    return rows


def write_sweep_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``sweep.csv``: one row per (estimator, family, θ): experiment, estimator, family, theta,
    in_training_range, mse."""
    lines = ["experiment,estimator,family,theta,in_training_range,mse"]
    for r in rows:
        experiment = ("unseen" if r["family"] not in TRAINED_FAMILIES and r["estimator"].endswith("_metavae") else
                      "many" if r["estimator"] == "many_metavae" else "single" if r["estimator"].startswith("single_") else "reference")
        lines.append(f"{experiment},{r['estimator']},{r['family']},{r['theta']:.6g},{int(r['in_training_range'])},{r['mse']:.6g}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family and model: the worst ratio to the exact posterior's MSE inside the training range,
    and how far out (in θ) the ratio stays ≤ 2 on each side."""
    out: dict[str, Any] = {}
    for family in sorted({r["family"] for r in rows} - set(TRAINED_FAMILIES)):  # unseen: the MSE near θ = 5
        here = [r for r in rows if r["family"] == family]
        theta = min({r["theta"] for r in here}, key=lambda t: abs(t - 5.0))
        out[family] = {r["estimator"]: {"theta": theta, "mse": r["mse"]} for r in here if r["theta"] == theta}
    for family in sorted({r["family"] for r in rows} & set(TRAINED_FAMILIES)):
        here = [r for r in rows if r["family"] == family]
        exact = {r["theta"]: r["mse"] for r in here if r["estimator"] == "exact_posterior"}
        for name in sorted({r["estimator"] for r in here} - {"exact_posterior"}):
            ratio = {r["theta"]: r["mse"] / exact[r["theta"]] for r in here if r["estimator"] == name}
            inside = [ratio[r["theta"]] for r in here if r["estimator"] == name and r["in_training_range"]]
            low, high = TRAINED_FAMILIES[family]
            below = sorted(t for t in ratio if t < low)[::-1]
            above = sorted(t for t in ratio if t > high)
            reach = [next((t for t in side if ratio[t] > 2), None) for side in (below, above)]
            out.setdefault(family, {})[name] = {
                "max_ratio_in_range": max(inside) if inside else None,  # None: no swept θ inside the range
                "median_ratio_in_range": float(np.median(inside)) if inside else None,
                "first_theta_beyond_2x": {"below": reach[0], "above": reach[1]},
            }
    return out


def report(config: ExpFamConfig, out: Path, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """``metavae expfam``: train every run not trained yet (unfinished ones resume), evaluate the
    sweeps, write ``sweep.csv``, ``summary.json`` and ``sweeps.png``."""
    from metavae.plotting.expfam import plot_sweeps

    out = output_directory(out)
    start = time.perf_counter()
    trained: dict[str, Any] = {}
    for run in runs(config):
        cfg = config.for_run(run)
        done = out / run / "finished.json"
        earlier = None if overwrite else finished_record(done, cfg.training_dict())
        if earlier is None:
            t0 = time.perf_counter()
            fit = train(cfg, run, out / run, resume=not overwrite, overwrite=overwrite, progress=progress)
            earlier = {"steps": fit.step, "best_val_iwae": fit.best_val, "train_seconds": time.perf_counter() - t0,
                       "environment": environment(cfg.train.device), "config": cfg.training_dict()}
            atomic_write_json(done, earlier)
        trained[run] = earlier
    models = {run: load_run(out / run)[1] for run in trained}
    if "single" not in config.experiments:
        models = {k: v for k, v in models.items() if not k.startswith("single_") or k.endswith("_metavae")}
    t0 = time.perf_counter()
    rows = evaluate(models, config)
    write_sweep_csv(rows, out / "sweep.csv")
    plot_sweeps(rows, TRAINED_FAMILIES, out / "sweeps.png")
    summary = {"summary": summarise(rows), "training": {k: {kk: vv for kk, vv in v.items() if kk != "config"}
                                                         for k, v in trained.items()},
               "evaluation_seconds": time.perf_counter() - t0, "seconds": time.perf_counter() - start,
               "environment": environment(config.train.device), "config": config.to_dict()}
    atomic_write_json(out / "summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"{'family':>12}  {'estimator':>26}  {'max ratio in range':>18}  {'≤2× reaches (below, above)':>28}"]
    for family, models in summary["summary"].items():
        if family not in TRAINED_FAMILIES:
            lines.append(f"{family:>12}  (never trained on) MSE at θ ≈ 5: " + ", ".join(
                f"{name} {s['mse']:.3g}" for name, s in models.items()))
            continue
        for name, s in models.items():
            reach = s["first_theta_beyond_2x"]
            fmt = lambda v: "—" if v is None else f"{v:g}"  # noqa: E731
            worst = "—" if s["max_ratio_in_range"] is None else f"{s['max_ratio_in_range']:.3f}"
            lines.append(f"{family:>12}  {name:>26}  {worst:>18}  "
                         f"{'until ' + fmt(reach['below']) + ', ' + fmt(reach['above']):>28}")
    lines.append("ratio = MSE / the exact posterior's (given x) on the same observations; 'until': the first swept θ "
                 "beyond the training range where the ratio exceeds 2 (— : never)")
    return "\n".join(lines)
