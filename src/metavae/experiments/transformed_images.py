"""The transformation-invariance experiments (paper §5.1, Fig. 6): MNIST under rotate / scale / shear,
and smallNORB's elevation / azimuth / lighting families (``data.dataset: norb``).

The verbs the command line dispatches to, the same for every experiment set:

- :func:`build_task`: an :class:`~metavae.data.image_task.ImageFamilyTask` from an :class:`~metavae.config.ExperimentConfig`;
- :func:`train`: train the configured model into a run directory (``metavae train``);
- :func:`evaluate`: the linear probe of a run on its held-out values (``metavae probe``), and
  :func:`measure_test_log_likelihood`;
- :func:`report`: train, evaluate and tabulate every model on one panel (``metavae compare``).

Each variant of :func:`report` is a registered model plus option overrides; every variant is
trained with the same data, schedule and seed, selected by the same validation IWAE, probed the
same way and scored by the same test IWAE. Results go to ``<out>/<variant>/`` (normal run
directories) and ``<out>/compare.json``, ``compare.png`` (overlaid, as the paper) and
``compare_grouped.png``. A variant whose run already finished is not retrained.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from metavae.config import ExperimentConfig, experiment_from_dict, parse_overrides, with_overrides
from metavae.data.families import reference_value
from metavae.data.image_task import ImageFamilyTask, load_images
from metavae.errors import CheckpointError, ConfigError
from metavae.evaluation.linear_probe import probe
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.evaluation.paper import paper_probe_accuracy
from metavae.experiments.common import build_registered_model, environment, finished_record, output_directory, resolve_data_root
from metavae.files import atomic_write_json
from metavae.models import MODELS, LatentVariableModel
from metavae.plotting.compare import plot_compare
from metavae.plotting.probe import plot_probe
from metavae.training.checkpoint import load_checkpoint, load_model_state
from metavae.training.devices import resolve_device
from metavae.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)

__all__ = [
    "build_task", "build_model", "train", "evaluate", "run_probe", "measure_test_log_likelihood", "load_run", "report",
    "run_variant", "compare_result", "write_compare", "VARIANTS", "variant_config", "format_compare_table", "resolve_data_root",
]


def build_task(config: ExperimentConfig, data_root: Path) -> ImageFamilyTask:
    """The family/meta-split of ``config.data`` over the base images under ``data_root``."""
    train, test = load_images(config.data, data_root)
    return ImageFamilyTask(config.data, train, test, seed=config.train.seed)


def build_model(config: ExperimentConfig, task: ImageFamilyTask) -> LatentVariableModel:
    """The configured registered model for ``task``, initialised from ``config.train.seed``
    (sizes that would not fit in memory are refused: :func:`~metavae.experiments.common.build_registered_model`)."""
    return build_registered_model(config.model_name, config.model, task, config.train.seed)


def train(config: ExperimentConfig, run_dir: Path, data_root: Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> FitResult:
    """Train ``config`` into ``run_dir`` (``config.yaml``, ``metrics.jsonl``, ``train.log``, checkpoints).

    The config, the data and the model sizes are checked before the run directory is touched;
    ``resume`` / ``overwrite`` as :meth:`Trainer.fit`.
    """
    task = build_task(config, data_root)
    task.check(config.train)
    model = build_model(config, task)
    log.info("training %s on %s/%s: %d training distributions %s", config.model_name, config.data.family,
             config.data.split, task.num_decoders, task.distribution_names())
    return Trainer(model, task, config, run_dir).fit(resume=resume, progress=progress, overwrite=overwrite)


def run_probe(config: ExperimentConfig, model: Any, task: ImageFamilyTask) -> dict[str, Any]:
    """:func:`~metavae.evaluation.probe` on every held-out value of the run's family/split, with the
    identity transformation (for smallNORB the first training value; or ``probe.reference``) as the
    invariance reference; returns the ``probe.json`` content (keyed by value)."""
    pc = config.probe
    start = time.perf_counter()
    reference = reference_value(config.data.family, config.data.split) if pc.reference is None else pc.reference
    result = probe(model, task, train_examples=pc.train_examples, test_examples=pc.test_examples, pool_size=pc.pool_size,
                   C=pc.C, max_iter=pc.max_iter, seed=pc.seed, reference=task.name(reference))
    values = task.images.values
    keys = {task.name(values[int(d)]): f"{values[int(d)]:g}" for d in task.held_out_distributions}
    per_value = {keys[name]: acc for name, acc in result["per_distribution"].items()}
    transfer = {keys[name]: acc for name, acc in result["invariance"]["per_distribution"].items()}
    return {
        "model": config.model_name,
        "dataset": config.data.dataset,
        "family": config.data.family,
        "split": config.data.split,
        "per_value": per_value,
        "mean_accuracy": result["mean_accuracy"],
        "invariance": {"reference": reference, "per_value": transfer, "mean_accuracy": result["invariance"]["mean_accuracy"]},
        "settings": {
            "train_examples_per_value": max(n["train"] for n in result["examples"].values()),  # equal for every value
            "test_examples_per_value": max(n["test"] for n in result["examples"].values()),
            "context_size": config.data.context_size,
            "context_pool_size": pc.pool_size,
            "representation": "posterior mean",
            "classifier": f"StandardScaler + LogisticRegression(C={pc.C}, max_iter={pc.max_iter})",
            "converged": result["converged"],
            "seed": pc.seed,
        },
        "seconds": time.perf_counter() - start,
    }


def evaluate(run_dir: Path, data_root: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Probe a run's best checkpoint; writes ``probe.json`` and ``probe.png`` into ``run_dir``.

    ``overrides``: ``probe.key=value`` strings; other sections are fixed by the checkpoint and refused.
    """
    items = parse_overrides(overrides or [])
    for key, _ in items:
        if not key.startswith("probe."):
            raise ConfigError(f"--set {key}: the probe takes only probe.* keys (e.g. probe.train_examples=10000); the run's "
                              "data, model and train settings are fixed by its checkpoint")
    config, model, task = load_run(run_dir, data_root)
    if items:
        config = with_overrides(config, items)
    result = run_probe(config, model, task)
    atomic_write_json(Path(run_dir) / "probe.json", result)
    paper = paper_probe_accuracy(config.data.dataset, config.data.family, config.data.split).get(config.model_name)
    plot_probe(result, Path(run_dir) / "probe.png", paper_mean=paper)
    return result


#: what the IWAE estimates, per model: D enters only through the proposal, never the model.
ESTIMANDS = {
    "metavae": "log p_θi(x): the marginal under the decoder of x's own training distribution i",
    "vae": "log p(x) under the shared decoder, or log p_θi(x) with decoders: per_distribution",
    "neural_statistician": "log p(x) = log ∫∫ p(c) p(z|c) p(x|z,c): unconditional, one shared decoder",
    "homoencoder": "log p(x) = log ∫∫ p(c) p(z|c) p(x|z,c): unconditional, one shared decoder",
    "homoencoder_vampprior": "log p(x) with the VampPrior p(c): unconditional, one shared decoder",
}


def measure_test_log_likelihood(run_dir: Path, data_root: Path) -> dict[str, Any]:
    """IWAE log-likelihood of the best checkpoint on the training distributions' test images;
    writes ``test_loglik.json``."""
    config, model, task = load_run(run_dir, data_root)
    ev = config.evaluation
    batch = task.test_batch(ev.test_examples, ev.pool_size)
    per_dist = per_distribution_log_likelihood(model, batch, task.num_decoders, ev.importance_samples, config.train.seed + 2)
    result = {
        "model": config.model_name,
        "test_log_likelihood": float(per_dist.mean()),
        "per_distribution": dict(zip(task.distribution_names(), per_dist.tolist())),
        "settings": {"examples_per_distribution": int(batch.x.shape[0] // task.num_decoders),
                     "importance_samples": ev.importance_samples, "context_pool_size": ev.pool_size,
                     "estimator": "IWAE over all latents, proper importance weights",
                     "estimand": ESTIMANDS.get(config.model_name, "log p(x)"),
                     "test_part_also_used_for_model_selection": config.data.validation == "test"},
    }
    atomic_write_json(Path(run_dir) / "test_loglik.json", result)
    return result


def load_run(run_dir: Path, data_root: Path, which: str = "best") -> tuple[ExperimentConfig, LatentVariableModel, ImageFamilyTask]:
    """The config, the ``best`` (or ``last``) model and the task of a finished run."""
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a run directory")
    payload = load_checkpoint(path)
    try:
        config = experiment_from_dict(payload["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is not valid for this metavae ({exc})") from None
    task = build_task(config, data_root)
    model = build_model(config, task)
    load_model_state(model, payload["state_dict"], path)
    device = resolve_device(config.train.device, fallback=True)  # where it trained, or the CPU if that is not here
    model.to(device).eval()
    task.to(device)
    return config, model, task


#: variant name → (registered model, option overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "metavae": ("metavae", {}),
    "homoencoder": ("homoencoder", {}),
    "neural_statistician": ("neural_statistician", {}),
    "homoencoder_vampprior": ("homoencoder_vampprior", {}),
    "vae": ("vae", {}),
    "vae_per_distribution": ("vae", {"decoders": "per_distribution"}),
}


def variant_config(base: ExperimentConfig, variant: str) -> ExperimentConfig:
    """``base`` with the variant's model: the base's model options that this model also has
    (e.g. ``z_dim``, ``hidden_dim``), then the variant's own options; other sizes at defaults."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model variant {variant!r}; choose from {', '.join(VARIANTS)}")
    model, options = VARIANTS[variant]
    raw = base.to_dict()
    valid = {f.name for f in dataclasses.fields(MODELS[model].config_class)}
    shared = {k: v for k, v in raw["model"].items() if k in valid}
    raw["model"] = {"name": model, **shared, **options}
    raw["name"] = f"{base.name}_{base.data.family}_{base.data.split}_{variant}"
    return experiment_from_dict(raw)


def run_variant(config: ExperimentConfig, run_dir: Path, data_root: Path, progress: bool = True,
                overwrite: bool = False) -> dict[str, Any]:
    """One variant of a panel (``config`` as :func:`variant_config` gives it): train into ``run_dir``,
    probe, score, and write ``run_dir/summary.json`` (the variant's finished record, with its config).

    A finished run with the same config is reused as it is; an unfinished one (e.g. killed) is
    resumed; ``overwrite`` moves an earlier run aside instead. Returns the summary."""
    summary_path = Path(run_dir) / "summary.json"
    earlier = None if overwrite else finished_record(summary_path, config.to_dict())  # same training, probe, evaluation
    if earlier is not None:
        log.info("%s: finished run found, reusing it", run_dir)
        return earlier
    start = time.perf_counter()
    log.info("%s: training %s", run_dir, config.model_name)
    fit = train(config, run_dir, data_root, resume=not overwrite, overwrite=overwrite, progress=progress)
    train_seconds = time.perf_counter() - start
    probe_result = evaluate(run_dir, data_root)
    ll = measure_test_log_likelihood(run_dir, data_root)
    summary = {
        "model": config.model_name,
        "mean_accuracy": probe_result["mean_accuracy"],
        "per_value": probe_result["per_value"],
        "invariance_mean_accuracy": probe_result["invariance"]["mean_accuracy"],
        "test_log_likelihood": ll["test_log_likelihood"],
        "test_log_likelihood_estimand": ll["settings"]["estimand"],
        "best_val_iwae": fit.best_val,
        "best_step": fit.best_step,
        "steps": fit.step,
        "train_seconds": train_seconds,
        "environment": environment(config.train.device),
        "config": config.to_dict(),
    }
    atomic_write_json(summary_path, summary)
    return summary


def compare_result(base: ExperimentConfig, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``compare.json`` content of a panel from its variants' summaries (variant → summary)."""
    return {
        "dataset": base.data.dataset,
        "family": base.data.family,
        "split": base.data.split,
        "seed": base.train.seed,
        "variants": {k: {kk: vv for kk, vv in v.items() if kk != "config"} for k, v in rows.items()},
        "paper_mean_accuracy": paper_probe_accuracy(base.data.dataset, base.data.family, base.data.split),
    }


def write_compare(result: dict[str, Any], out: Path) -> None:
    """``out/compare.json``, ``compare.png`` (overlaid, as the paper) and ``compare_grouped.png``."""
    atomic_write_json(out / "compare.json", result)
    plot_compare(result, out / "compare.png")  # the paper's overlaid style
    plot_compare(result, out / "compare_grouped.png", style="grouped")


def report(base: ExperimentConfig, variants: list[str], out: Path, data_root: Path, progress: bool = True,
                   overwrite: bool = False) -> dict[str, Any]:
    """Train, probe and score ``variants`` into ``out/<variant>/`` (:func:`run_variant`). A variant's finished
    run with the same config is reused; an unfinished one is resumed; ``overwrite`` moves earlier runs aside instead."""
    out = output_directory(out)
    rows = {variant: run_variant(variant_config(base, variant), out / variant, data_root, progress=progress,
                                 overwrite=overwrite) for variant in variants}
    result = compare_result(base, rows)
    write_compare(result, out)
    return result


def format_compare_table(result: dict[str, Any]) -> str:
    paper = result["paper_mean_accuracy"]
    lines = [f"{result['family']} / {result['split']} (seed {result['seed']})",
             f"{'model':>22}  {'probe acc':>9}  {'paper':>6}  {'ref-clf acc':>11}  {'test IWAE':>10}"]
    for name, row in result["variants"].items():
        ref = paper.get(row["model"]) if name == row["model"] else None
        lines.append(f"{name:>22}  {row['mean_accuracy']:>9.4f}  {('≈%.2f' % ref) if ref else '—':>6}  "
                     f"{row['invariance_mean_accuracy']:>11.4f}  {row['test_log_likelihood']:>10.2f}")
    lines.append("test IWAE: log p_θi(x) with x's own decoder for metavae / vae_per_distribution; "
                 "unconditional log p(x) with one shared decoder for the others (see test_loglik.json)")
    return "\n".join(lines)
