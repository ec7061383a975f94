"""Compiled inference on the inclined-plane simulator (paper §3, Fig. 1), measured against the exact posterior.

The verbs, as for every experiment set:

- :func:`build_task`: the :class:`~metavae.data.physics_task.PhysicsTask` of a variant (the 25
  training planes, or the baseline's single plane);
- :func:`build_model`: the variant's :class:`~metavae.models.compiled_inference.CompiledInference`;
- :func:`train`: train one variant into a run directory with the one :class:`~metavae.training.Trainer`;
- :func:`evaluate`: every variant and the exact Bayes posterior on the 304-plane test grid
  (:func:`evaluate_planes`), written as ``planes.csv`` and the heatmaps (:func:`report` adds
  ``summary.json``);
- :func:`report`: train what is not trained yet, then evaluate (``metavae physics``).

Variants (:data:`VARIANTS`): ``meta`` q(μ | D, t) over the 25 planes with a context of (t, μ)
pairs; ``oracle`` q(μ | L, A, t) told the plane; ``baseline`` q(μ | t) trained on the single plane
(L = 10, A = 45); ``meta_times``, the meta network with a context of times only. Each variant's run
lives in ``<out>/<variant>/`` (an ordinary run directory: resumable, refuses foreign folders), and
a variant whose run finished with the same configuration is not retrained.

The evaluation boxes are simulated from ``evaluation.seed``, independently of every training and
validation box; each test box's context set is drawn from the other boxes of its plane. Nothing
is tuned on them.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from metavae.config.loading import require, set_dotted, to_dict
from metavae.config.schema import RunOfExperiment, TrainConfig
from metavae.data.physics import TEST_PLANES, TRAIN_PLANES, InclinedPlane
from metavae.data.physics_task import PhysicsTask, plane_name
from metavae.errors import CheckpointError, ConfigError
from metavae.evaluation.exact_posterior import exact_posterior
from metavae.experiments.common import environment, finished_record, output_directory
from metavae.files import atomic_write_json, atomic_write_text
from metavae.models.compiled_inference import CompiledInference, CompiledInferenceConfig
from metavae.training.checkpoint import load_checkpoint, load_model_state
from metavae.training.devices import module_device, resolve_device
from metavae.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)

__all__ = [
    "PhysicsDataConfig", "PhysicsEvaluationConfig", "PhysicsConfig", "VARIANTS", "TRAINING_RANGE", "build_task", "build_model",
    "train", "load_run", "evaluate_planes", "summarise", "evaluate", "report", "format_summary", "load_physics_config",
]

#: variant → (model conditioning, context features, trained on the baseline's single plane)
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "meta": ("context", "pairs", False),
    "oracle": ("plane", "pairs", False),
    "baseline": ("none", "pairs", True),
    "meta_times": ("context", "times", False),
}

#: the planes inside the training range: A ∈ [20, 60], L ∈ [2, 10] (the issue's targets apply there)
TRAINING_RANGE = {"length": (2.0, 10.0), "angle": (20.0, 60.0)}


def in_training_range(length: float, angle: float) -> bool:
    (l0, l1), (a0, a1) = TRAINING_RANGE["length"], TRAINING_RANGE["angle"]
    return l0 <= length <= l1 and a0 <= angle <= a1


@dataclass(frozen=True)
class PhysicsDataConfig:
    """The simulator and the training data.

    ``simulations`` boxes per training plane (the paper: 1000), ``validation_fraction`` of them kept
    for checkpoint selection; ``fresh``: simulate new boxes every step instead (the stored ones
    then serve validation only); ``context_size``: boxes per context set (the paper's code: 20);
    ``noise``: the timer's standard deviation (s); ``method``: ``closed_form`` or the 2020 code's
    ``euler`` with step ``dt``; ``baseline_plane``: the single plane (L, A) of the baseline.
    """

    simulations: int = 1000
    validation_fraction: float = 0.1
    fresh: bool = True
    context_size: int = 20
    noise: float = 0.02
    method: Literal["closed_form", "euler"] = "closed_form"
    dt: float = 0.005
    baseline_plane: tuple[float, float] = (10.0, 45.0)

    def __post_init__(self) -> None:
        require(self.simulations >= 2, "data.simulations", f"must be ≥ 2, got {self.simulations}")
        require(0 < self.validation_fraction < 1, "data.validation_fraction", f"must be in (0, 1), got {self.validation_fraction}")
        require(self.context_size >= 1, "data.context_size", f"must be ≥ 1, got {self.context_size}")
        require(self.noise > 0, "data.noise", f"must be positive, got {self.noise}")
        require(self.dt > 0, "data.dt", f"must be positive, got {self.dt}")
        require(self.method in ("closed_form", "euler"), "data.method", f"choose closed_form or euler, got {self.method!r}")
        length, angle = self.baseline_plane
        require(length > 0 and 0 < angle < 90, "data.baseline_plane", f"need [length > 0, 0 < angle < 90], got {list(self.baseline_plane)}")

    def simulator(self) -> InclinedPlane:
        return InclinedPlane(noise=self.noise, method=self.method, dt=self.dt)


@dataclass(frozen=True)
class PhysicsEvaluationConfig:
    """The 304-plane test grid: ``simulations`` boxes per plane from ``seed`` (independent of all
    training data), each box's context set drawn from a pool of ``pool_size`` boxes of its plane."""

    simulations: int = 1000
    seed: int = 20_200_207
    pool_size: int = 1000

    def __post_init__(self) -> None:
        require(self.simulations >= 2, "evaluation.simulations", f"must be ≥ 2, got {self.simulations}")
        require(self.seed >= 0, "evaluation.seed", f"must be ≥ 0, got {self.seed}")
        require(self.pool_size >= 1, "evaluation.pool_size", f"must be ≥ 1, got {self.pool_size}")


def _default_train() -> TrainConfig:
    return TrainConfig(lr=2e-3, lr_schedule="cosine", batch_size=64, epochs=1000, max_steps=6000, context_pool_size=100,
                       validate_every=1000, checkpoint_every=500, val_examples=100, val_importance_samples=1,
                       val_pool_size=100)


@dataclass(frozen=True)
class PhysicsConfig(RunOfExperiment):
    """The whole experiment; one variant's training run records it with ``variant`` set.

    Sections: ``data`` (:class:`PhysicsDataConfig`), ``model`` (:class:`CompiledInferenceConfig`:
    sizes; its ``conditioning`` and ``context_features`` are set by each variant), ``train``
    (:class:`~metavae.config.TrainConfig`, with this experiment's defaults), ``evaluation``
    (:class:`PhysicsEvaluationConfig`), ``models`` (the variants to run).
    """

    RUN_FIELD: ClassVar[str] = "variant"
    TRAINING_KEYS: ClassVar[tuple[str, ...]] = ("data", "model", "train")  # not evaluation, models

    name: str = "physics"
    data: PhysicsDataConfig = field(default_factory=PhysicsDataConfig)
    model: CompiledInferenceConfig = field(default_factory=CompiledInferenceConfig)
    train: TrainConfig = field(default_factory=_default_train)
    evaluation: PhysicsEvaluationConfig = field(default_factory=PhysicsEvaluationConfig)
    models: tuple[str, ...] = ("meta", "oracle", "baseline")
    variant: str = field(default="", metadata={"internal": True})

    def __post_init__(self) -> None:
        require(len(self.models) > 0, "models", "name at least one variant")
        for name in self.models:
            require(name in VARIANTS, "models", f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        require(len(set(self.models)) == len(self.models), "models", f"a variant is named twice in {list(self.models)}")
        require(self.variant in ("", *VARIANTS), "variant", f"unknown variant {self.variant!r}")
        n = self.data.context_size
        for key, pool in (("train.context_pool_size", self.train.context_pool_size), ("train.val_pool_size", self.train.val_pool_size)):
            require(pool == 0 or pool >= n, key, f"a context pool must hold at least data.context_size = {n} boxes (got {pool})")
        require((self.model.mu_low, self.model.mu_high) == (InclinedPlane.mu_low, InclinedPlane.mu_high), "model.mu_low",
                f"the network's support must be the simulator's prior ({InclinedPlane.mu_low}, {InclinedPlane.mu_high}), "
                f"got ({self.model.mu_low}, {self.model.mu_high})")
        require(self.evaluation.pool_size >= n, "evaluation.pool_size",
                f"a context pool must hold at least data.context_size = {n} boxes (got {self.evaluation.pool_size})")

    def for_run(self, variant: str) -> PhysicsConfig:
        """This config as the training run of ``variant`` (its model's conditioning set)."""
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        conditioning, features, _ = VARIANTS[variant]
        return replace(self, model=replace(self.model, conditioning=conditioning, context_features=features), variant=variant)


def load_physics_config(path: str | Path | None, overrides: list[tuple[str, Any]] = ()) -> PhysicsConfig:
    """A YAML physics config (or the defaults) with dotted ``--set`` overrides."""
    from metavae.config.loading import read_config_file

    raw = read_config_file(path) if path is not None else {}
    for key, value in overrides:
        set_dotted(raw, key, value)
    if "variant" in raw:  # set by metavae for each variant's run, never by a config
        raise ConfigError(f"unknown config key 'variant'; valid keys here: {', '.join(sorted(PhysicsConfig().to_dict()))} "
                          "(the variants to run are chosen with models)")
    return PhysicsConfig.from_dict(raw)


# ---------------------------------------------------------------------- the verbs
def build_task(config: PhysicsConfig, variant: str | None = None) -> PhysicsTask:
    """The training task of ``variant`` (default ``config.variant``): the 25 planes, or the baseline's one."""
    variant = variant or config.variant
    planes = (tuple(config.data.baseline_plane),) if VARIANTS[variant][2] else TRAIN_PLANES
    return PhysicsTask(planes, simulations=config.data.simulations, context_size=config.data.context_size,
                       validation_fraction=config.data.validation_fraction, seed=config.train.seed,
                       simulator=config.data.simulator(), fresh=config.data.fresh)


def build_model(config: PhysicsConfig, variant: str | None = None) -> CompiledInference:
    """The variant's network, initialised from ``config.train.seed``."""
    cfg = config.for_run(variant or config.variant)
    torch.manual_seed(cfg.train.seed)
    return CompiledInference.from_config(cfg.model)


def train(config: PhysicsConfig, variant: str, run_dir: Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> FitResult:
    """Train ``variant`` into ``run_dir`` on −log q(μ | ·, t) (see :mod:`metavae.models.compiled_inference`)."""
    cfg = config.for_run(variant)
    task = build_task(cfg)
    task.check(cfg.train)
    model = build_model(cfg)
    log.info("physics: training %s on %d plane(s) into %s", variant, task.num_decoders, run_dir)
    return Trainer(model, task, cfg, run_dir).fit(resume=resume, progress=progress, overwrite=overwrite)


def load_run(run_dir: Path) -> tuple[PhysicsConfig, CompiledInference]:
    """The config and the best model of a finished variant run, in eval mode, on the run's
    ``train.device`` (the CPU when that device is not here)."""
    path = Path(run_dir) / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    try:
        config = PhysicsConfig.from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is not a valid physics config for this metavae ({exc})") from None
    if not config.variant:
        raise CheckpointError(f"{path}: not a physics variant run (its config names no variant)")
    model = CompiledInference.from_config(config.model)
    load_model_state(model, payload["state_dict"], path)
    return config, model.to(resolve_device(config.train.device, fallback=True)).eval()


def evaluate_planes(models: Mapping[str, CompiledInference], config: PhysicsConfig,
                    planes: tuple[tuple[float, float], ...] = TEST_PLANES) -> list[dict[str, Any]]:
    """Per plane: the exact posterior's MSE and, for every model, the MSE of its posterior mean, its
    ratio to the Bayes MSE, the coverage of its central 50 % and 90 % intervals and its mean log q(μ).

    The boxes of every plane are ``config.evaluation.simulations`` simulations from
    ``config.evaluation.seed``; each box's context is ``data.context_size`` boxes drawn from a pool
    of ``evaluation.pool_size`` boxes of the same plane. The exact posterior (a fine adaptive grid,
    :func:`~metavae.evaluation.exact_posterior.exact_posterior`) knows the plane; it is the floor.
    A box's true μ lies in the central interval of level c iff (1 − c)/2 ≤ 0.5 − |F(μ) − 0.5|, with F
    the model's exact CDF: the coverage needs no quantile search. Each box's context comes from a
    separately simulated pool of its plane, never the box itself.
    """
    ev = config.evaluation
    task = PhysicsTask(planes, simulations=ev.simulations, context_size=config.data.context_size,
                       seed=ev.seed, simulator=config.data.simulator())
    batches = [task.distribution_batch(plane_name(length, angle), "test", None, ev.pool_size,
                                       torch.Generator().manual_seed(ev.seed + i)) for i, (length, angle) in enumerate(planes)]
    x = torch.cat([b.x for b in batches]).double()  # (planes · simulations, 5)
    slid = x[:, 1] == 1
    bayes = exact_posterior(torch.where(slid, x[:, 0], torch.full_like(x[:, 0], math.inf)), slid, x[:, 3], x[:, 4],
                            config.data.simulator())  # every box of every plane at once
    per_plane = len(batches[0].x)
    err = ((bayes.mean - x[:, 2]) ** 2).view(len(planes), per_plane)
    inside = {level: ((x[:, 2] >= lo) & (x[:, 2] <= hi)).double().view(len(planes), per_plane).mean(1)
              for level, (lo, hi) in bayes.intervals.items()}
    rows = []
    for i, ((length, angle), batch) in enumerate(zip(planes, batches)):
        mse_bayes = float(err[i].mean())
        row: dict[str, Any] = {"length": length, "angle": angle, "in_training_range": in_training_range(length, angle),
                               "slid_fraction": float((batch.x[:, 1] == 1).double().mean()), "mse_bayes": mse_bayes,
                               "coverage50_bayes": float(inside[0.5][i]), "coverage90_bayes": float(inside[0.9][i])}
        mu = batch.x[:, 2].double()
        for variant, model in models.items():
            on = batch.to(module_device(model))  # the model's device; results back on the CPU
            with torch.no_grad():
                q = model.posterior(on.x, on.context if model.uses_context else None)
                mean, cdf = q.mean.double().cpu(), q.cdf(on.x[:, 2]).double().cpu()
                log_q = q.log_prob(model.target(on.x)).cpu()
            mse = float(((mean - mu) ** 2).mean())
            tail = 0.5 - (cdf - 0.5).abs()  # the smaller tail mass at the true μ
            row[f"mse_{variant}"] = mse
            row[f"ratio_{variant}"] = mse / mse_bayes
            row[f"coverage50_{variant}"] = float((tail >= 0.25).double().mean())
            row[f"coverage90_{variant}"] = float((tail >= 0.05).double().mean())
            row[f"log_q_{variant}"] = float(log_q.mean())
        rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """The issue's targets per variant: inside the training range the worst MSE ratio, the number of
    planes within 1.2× of the Bayes MSE and the range of 90 % coverage; over all planes the median ratio."""
    inside = [r for r in rows if r["in_training_range"]]
    out: dict[str, Any] = {"planes": len(rows), "planes_in_training_range": len(inside), "variants": {}}
    for v in variants:
        ratios = [r[f"ratio_{v}"] for r in rows]
        ratios_in = [r[f"ratio_{v}"] for r in inside]
        cov_in = [r[f"coverage90_{v}"] for r in inside]
        worst = max(inside, key=lambda r: r[f"ratio_{v}"]) if inside else None
        out["variants"][v] = {
            "median_ratio_all": statistics.median(ratios),
            "max_ratio_in_range": max(ratios_in) if inside else None,
            "worst_plane_in_range": plane_name(worst["length"], worst["angle"]) if worst else None,
            "planes_within_1.2_in_range": sum(r <= 1.2 for r in ratios_in),
            "coverage90_in_range": [min(cov_in), max(cov_in)] if inside else None,
            "planes_coverage90_within_0.85_0.95_in_range": sum(0.85 <= c <= 0.95 for c in cov_in),
            "coverage50_median_all": statistics.median(r[f"coverage50_{v}"] for r in rows),
            "mean_mse_all": statistics.fmean(r[f"mse_{v}"] for r in rows),
        }
    out["targets"] = {"max_ratio_in_range": 1.2, "median_ratio_all": 1.5, "coverage90_in_range": [0.85, 0.95]}
    out["mean_mse_bayes_all"] = statistics.fmean(r["mse_bayes"] for r in rows)
    return out


CSV_COLUMNS = ("length", "angle", "in_training_range", "slid_fraction", "mse_bayes", "coverage50_bayes", "coverage90_bayes")


def write_planes_csv(rows: list[dict[str, Any]], variants: list[str], path: Path) -> None:
    """``planes.csv``: one row per test plane; per variant ``mse_*``, ``ratio_*``, ``coverage50_*``,
    ``coverage90_*``, ``log_q_*``."""
    columns = list(CSV_COLUMNS) + [f"{k}_{v}" for v in variants for k in ("mse", "ratio", "coverage50", "coverage90", "log_q")]
    lines = [",".join(columns)]
    for r in rows:
        lines.append(",".join(_csv_value(r[c]) for c in columns))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_planes_csv(path: Path) -> list[dict[str, Any]]:
    """``planes.csv`` back as rows of floats (``in_training_range`` as bool)."""
    with open(path, newline="") as fh:
        return [{k: (v == "1" if k == "in_training_range" else float(v)) for k, v in row.items()} for row in csv.DictReader(fh)]


def evaluate(run_dirs: Mapping[str, Path], out: Path, config: PhysicsConfig) -> dict[str, Any]:
    """Evaluate the variants' best checkpoints on the test grid; writes ``planes.csv``,
    ``heatmaps.png`` and ``ratios.png`` into ``out`` and returns the :func:`summarise` dict. Every
    run must have been trained on ``config.data`` (the simulator and context size it is scored with)."""
    from metavae.plotting.physics import plot_heatmaps, plot_ratios

    start = time.perf_counter()
    models = {}
    for variant, run_dir in run_dirs.items():
        run_config, model = load_run(run_dir)
        if run_config.variant != variant:
            raise CheckpointError(f"{run_dir} holds the {run_config.variant!r} variant, not {variant!r}")
        if run_config.data != config.data:
            raise ConfigError(f"{run_dir} was trained with other data settings ({to_dict(run_config.data)}) than the "
                              f"evaluation's ({to_dict(config.data)}); evaluate it with its own config")
        models[variant] = model
    rows = evaluate_planes(models, config)
    variants = list(models)
    summary = summarise(rows, variants)
    summary["evaluation"] = to_dict(config.evaluation)
    summary["seconds"] = time.perf_counter() - start
    write_planes_csv(rows, variants, out / "planes.csv")
    plot_heatmaps(rows, variants, out / "heatmaps.png")
    plot_ratios(rows, variants, out / "ratios.png")
    return summary


def report(config: PhysicsConfig, out: Path, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """``metavae physics``: train every variant of ``config.models`` not yet trained (unfinished runs
    resume; ``overwrite`` moves earlier runs aside), evaluate them all, write ``summary.json``."""
    out = output_directory(out)
    trained: dict[str, Any] = {}
    for variant in config.models:
        cfg = config.for_run(variant)
        run_dir = out / variant
        done = run_dir / "finished.json"
        earlier = None if overwrite else finished_record(done, cfg.training_dict())
        if earlier is not None:
            log.info("physics: %s finished earlier in %s, reusing it", variant, run_dir)
            trained[variant] = earlier
            continue
        start = time.perf_counter()
        fit = train(config, variant, run_dir, resume=not overwrite, overwrite=overwrite, progress=progress)
        if cfg.train.max_steps is not None and fit.step > cfg.train.max_steps:
            raise ConfigError(f"{run_dir} was trained for {fit.step} steps, more than train.max_steps = {cfg.train.max_steps}; "
                              "use another --out, or --overwrite to train it afresh")
        record = {"steps": fit.step, "best_step": fit.best_step, "best_val_log_q": fit.best_val,
                  "train_seconds": time.perf_counter() - start, "environment": environment(cfg.train.device),
                  "config": cfg.training_dict()}
        atomic_write_json(done, record)
        trained[variant] = record
    summary = evaluate({v: out / v for v in config.models}, out, config)
    summary["training"] = {v: {k: r[k] for k in ("steps", "best_step", "best_val_log_q", "train_seconds")}
                           for v, r in trained.items()}
    summary["environment"] = environment(config.train.device)
    summary["config"] = config.to_dict()
    atomic_write_json(out / "summary.json", summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The targets table printed by ``metavae physics``."""
    n_in = summary["planes_in_training_range"]
    lines = [f"{'variant':>10}  {'median ratio (304)':>18}  {'max ratio in range':>24}  {'≤1.2× in range':>14}  "
             f"{'cov90 in range':>14}  {'mean MSE':>9}"]
    for v, s in summary["variants"].items():
        lo, hi = s["coverage90_in_range"]
        lines.append(f"{v:>10}  {s['median_ratio_all']:>18.3f}  {s['max_ratio_in_range']:>8.2f} ({s['worst_plane_in_range']:>13})  "
                     f"{s['planes_within_1.2_in_range']:>6}/{n_in:<7}  {lo:>6.3f}–{hi:<6.3f}  {s['mean_mse_all']:>9.5f}")
    lines.append(f"{'bayes':>10}  {1.0:>18.3f}  {'':>24}  {'':>14}  {'':>14}  {summary['mean_mse_bayes_all']:>9.5f}")
    lines.append("ratio = MSE of the posterior mean / the exact posterior's MSE on the same boxes; training range: "
                 "A ∈ [20, 60], L ∈ [2, 10]; targets: max ratio ≤ 1.2 in range, median ≤ 1.5, 90 % coverage 0.85–0.95")
    return "\n".join(lines)
