"""Build tasks and models from a config, train into a run directory, load a run back."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from metavae.config import ExperimentConfig, experiment_from_dict, parse_overrides, with_overrides
from metavae.data.image_task import ImageFamilyTask, load_images
from metavae.data.mnist import default_data_root
from metavae.errors import CheckpointError, ConfigError
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.evaluation.paper import PAPER_PROBE_ACCURACY
from metavae.evaluation.probe import run_probe
from metavae.files import atomic_write_json
from metavae.models import MODELS, LatentVariableModel
from metavae.plotting.probe import plot_probe
from metavae.training.checkpoint import load_checkpoint, load_model_state
from metavae.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$METAVAE_DATA``, else ``./data``."""
    return Path(data_dir) if data_dir is not None else default_data_root()


def build_task(config: ExperimentConfig, data_root: Path) -> ImageFamilyTask:
    train, test = load_images(config.data, data_root)
    return ImageFamilyTask(config.data, train, test, seed=config.train.seed)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def build_model(config: ExperimentConfig, task: ImageFamilyTask) -> LatentVariableModel:
    """The registered model, initialised from ``config.train.seed``.

    The model is first laid out on the ``meta`` device (no memory) to count its parameters:
    sizes whose training state (parameters, gradients and Adam's two moments, float32) would
    not fit in this machine's memory are refused with a :class:`ConfigError` before allocating.
    """
    cls = MODELS[config.model_name]
    try:
        with torch.device("meta"):
            layout = cls.from_config(config.model, task.event_shape, task.num_decoders)
        count = sum(p.numel() for p in layout.parameters())
    except RuntimeError:  # even the layout overflows: a tensor of more than 2**63 bytes
        count = None
    have = _memory_bytes()
    if count is None or (have is not None and 4 * 4 * count > have):
        sizes = ", ".join(f"model.{k}={v}" for k, v in config.to_dict()["model"].items()
                          if k != "name" and not isinstance(v, str))
        what = "more than 2**63 bytes" if count is None else f"{count:,} parameters ({16 * count / 2**30:.1f} GiB to train)"
        raise ConfigError(f"model '{config.model_name}' with {sizes} needs {what}, more than this machine's "
                          f"{(have or 0) / 2**30:.1f} GiB of memory; choose smaller sizes")
    torch.manual_seed(config.train.seed)
    try:
        return cls.from_config(config.model, task.event_shape, task.num_decoders)
    except (RuntimeError, MemoryError) as exc:
        raise ConfigError(f"model '{config.model_name}' cannot be built with these sizes ({' '.join(str(exc).split())[:200]}); "
                          "choose smaller model sizes") from None


def train(config: ExperimentConfig, run_dir: Path, data_root: Path, resume: bool = False, progress: bool = True,
          overwrite: bool = False) -> FitResult:
    """Train ``config`` into ``run_dir`` (``config.yaml``, ``metrics.jsonl``, ``train.log``, checkpoints).

    The config, the data and the model sizes are checked before the run directory is touched;
    ``resume`` / ``overwrite`` as :meth:`Trainer.fit`.
    """
    task = build_task(config, data_root)
    task.check(config.train)
    model = build_model(config, task)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    log.info("training %s on %s/%s: %d training distributions %s", config.model_name, config.data.family,
             config.data.split, task.num_decoders, task.distribution_names())
    return Trainer(model, task, config, run_dir).fit(resume=resume, progress=progress, overwrite=overwrite)


def probe_run(run_dir: Path, data_root: Path, overrides: list[str] | None = None) -> dict[str, Any]:
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
    paper = PAPER_PROBE_ACCURACY.get((config.data.family, config.data.split), {}).get(config.model_name)
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
    batch = task.evaluation_batch("test", torch.arange(len(task.images.test)), ev.test_examples, ev.pool_size)
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
    model.eval()
    return config, model, task
