"""Build tasks and models from a config, train into a run directory, load a run back."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from metavae.config import ExperimentConfig, experiment_from_dict, load_config, parse_overrides, save_config, with_overrides
from metavae.data.image_task import ImageFamilyTask, load_images
from metavae.data.mnist import default_data_root
from metavae.errors import CheckpointError, ConfigError
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.evaluation.paper import PAPER_PROBE_ACCURACY
from metavae.evaluation.probe import run_probe
from metavae.models import MODELS, LatentVariableModel
from metavae.plotting.probe import plot_probe
from metavae.training.checkpoint import load_checkpoint
from metavae.training.trainer import FitResult, Trainer

log = logging.getLogger(__name__)


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$METAVAE_DATA``, else ``./data``."""
    return Path(data_dir) if data_dir is not None else default_data_root()


def build_task(config: ExperimentConfig, data_root: Path) -> ImageFamilyTask:
    train, test = load_images(config.data, data_root)
    return ImageFamilyTask(config.data, train, test, seed=config.train.seed)


def build_model(config: ExperimentConfig, task: ImageFamilyTask) -> LatentVariableModel:
    """The registered model, initialised from ``config.train.seed``."""
    torch.manual_seed(config.train.seed)
    return MODELS[config.model_name].from_config(config.model, task.event_shape, task.num_decoders)


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("metavae").addHandler(handler)
    return handler


def train(config: ExperimentConfig, run_dir: Path, data_root: Path, resume: bool = False, progress: bool = True) -> FitResult:
    """Train ``config`` into ``run_dir`` (``config.yaml``, ``metrics.jsonl``, ``train.log``, checkpoints)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    saved = run_dir / "config.yaml"
    if resume and saved.exists():
        if load_config(saved).training_dict() != config.training_dict():
            raise ConfigError(f"{saved} differs from the config given in its data, model or train section: resume "
                              "with the same config, or use a new --out")
    save_config(config, saved)
    task = build_task(config, data_root)
    model = build_model(config, task)
    handler = _attach_log_file(run_dir)
    try:
        log.info("training %s on %s/%s: %d training distributions %s", config.model_name, config.data.family,
                 config.data.split, task.num_decoders, task.distribution_names())
        return Trainer(model, task, config, run_dir).fit(resume=resume, progress=progress)
    finally:
        logging.getLogger("metavae").removeHandler(handler)
        handler.close()


def probe_run(run_dir: Path, data_root: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Probe a run's best checkpoint; writes ``probe.json`` and ``probe.png`` into ``run_dir``."""
    config, model, task = load_run(run_dir, data_root)
    if overrides:
        config = with_overrides(config, parse_overrides(overrides))
    result = run_probe(config, model, task)
    (Path(run_dir) / "probe.json").write_text(json.dumps(result, indent=2))
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
    (Path(run_dir) / "test_loglik.json").write_text(json.dumps(result, indent=2))
    return result


def load_run(run_dir: Path, data_root: Path, which: str = "best") -> tuple[ExperimentConfig, LatentVariableModel, ImageFamilyTask]:
    """The config, the ``best`` (or ``last``) model and the task of a finished run."""
    path = Path(run_dir) / "checkpoints" / f"{which}.pt"
    payload = load_checkpoint(path)
    config = experiment_from_dict(payload["config"])
    task = build_task(config, data_root)
    model = build_model(config, task)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: parameters do not fit the model its config describes ({exc})") from exc
    model.eval()
    return config, model, task
