"""Experiment configuration: frozen dataclasses loaded from small YAML files.

A config file has the sections ``data``, ``model`` (``name`` plus that model's options),
``train`` and ``probe``; every key has a default, so a file only states what differs.
Data roots never appear in configs: they come from ``--data-dir`` / ``$METAVAE_DATA``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from metavae.config.loading import flatten, from_dict, read_config_file, require, set_dotted, to_dict
from metavae.data.families import DATASET_FAMILIES, GRIDS, canonical_split
from metavae.errors import ConfigError

__all__ = ["RunOfExperiment", "DataConfig", "TrainConfig", "ProbeConfig", "EvaluationConfig", "ExperimentConfig", "RunConfig", "TrainingRun", "RESUMABLE_KEYS", "resume_conflict", "experiment_from_dict", "load_config", "with_overrides"]


@dataclass(frozen=True)
class DataConfig:
    """Which family of distributions, and how context sets and validation data are drawn.

    ``validation``: ``"train_holdout"`` (default) keeps ``validation_size`` images of the train
    part out of training and selects checkpoints on them; ``"test"`` uses the test part of the
    training distributions, as the paper did (never the held-out distributions).
    ``train_subset``: use only the first n train images (quick runs and tests); null = all.

    ``dataset``: ``mnist`` or ``fashion_mnist`` (families ``rotate``, ``scale``, ``shear``: every
    transformation value is one distribution), or ``norb`` (smallNORB, families ``elevation``,
    ``azimuth``, ``lighting``: every factor value is one distribution, the examples taken at it;
    ``validation_size`` and ``train_subset`` then count examples per distribution).
    """

    dataset: Literal["mnist", "fashion_mnist", "norb"] = "mnist"
    family: Literal["rotate", "scale", "shear", "elevation", "azimuth", "lighting"] = "rotate"
    split: str = "sparse"
    context_size: int = 10
    validation: Literal["train_holdout", "test"] = "train_holdout"
    validation_size: int = 5000
    train_subset: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", canonical_split(self.split))
        families = DATASET_FAMILIES[self.dataset]
        require(self.family in families, "data.family", f"{self.family!r} is not a family of data.dataset {self.dataset!r}; "
                f"choose one of {', '.join(families)}")
        require(self.context_size >= 1, "data.context_size", f"must be ≥ 1, got {self.context_size}")
        require(self.validation_size >= 1, "data.validation_size", f"must be ≥ 1, got {self.validation_size}")
        require(self.train_subset is None or self.train_subset > self.validation_size, "data.train_subset",
                "must exceed data.validation_size (or be null)")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. ``epochs`` counts passes over each distribution's train part; ``max_steps``
    (if set) stops earlier. ``context_pool_size`` > 0 draws each example's context from a pool
    of that many images per distribution and step (embedded once); 0 gives every example its
    own context images (the straightforward, slower estimator of the same objective).

    ``loss_limit``: divergence guard. Training stops at once (nothing of that step is saved) when
    the loss is not finite or its absolute value exceeds ``loss_limit`` (null: only non-finite
    values stop it), or when a gradient, a parameter or the validation IWAE is not finite.

    ``lr_schedule``: ``constant`` (the paper's), or ``cosine``: the learning rate at step s (counted
    from 0) of a run of S steps (``max_steps``, or ``epochs`` × the task's steps per epoch) is
    ``lr · (f + (1 − f)·½(1 + cos(π s / S)))`` with f = ``lr_final_fraction``. A cosine run's
    length fixes its schedule, so it can be resumed but not extended (``max_steps`` and ``epochs``
    must stay as they were).

    ``device``: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``;
    the model, the batches (data fetching and transforms) and validation run there; checkpoints
    are device-independent. ``precision``: ``fp32``, ``bf16`` or ``fp16`` — the networks run under
    ``torch.autocast`` in that precision (fp16 with a gradient scaler) while log-densities,
    log-sum-exps and KL terms stay in float32.
    """

    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final_fraction: float = 0.0
    batch_size: int = 100
    epochs: int = 100
    max_steps: int | None = None
    seed: int = 0
    context_pool_size: int = 100
    validate_every: int | None = None
    checkpoint_every: int = 500
    val_examples: int = 1000
    val_importance_samples: int = 100
    val_pool_size: int = 500
    num_threads: int | None = None
    loss_limit: float | None = 1e10
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    def __post_init__(self) -> None:
        require(self.lr > 0, "train.lr", f"must be positive, got {self.lr}")
        require(self.seed >= 0, "train.seed", f"must be ≥ 0, got {self.seed}")
        require(self.lr_schedule in ("constant", "cosine"), "train.lr_schedule", f"choose constant or cosine, got {self.lr_schedule!r}")
        require(0 <= self.lr_final_fraction <= 1, "train.lr_final_fraction", f"must be in [0, 1], got {self.lr_final_fraction}")
        require(self.loss_limit is None or self.loss_limit > 0, "train.loss_limit", "must be positive or null (no limit)")
        require(self.batch_size >= 1, "train.batch_size", f"must be ≥ 1, got {self.batch_size}")
        require(self.epochs >= 1, "train.epochs", f"must be ≥ 1, got {self.epochs}")
        require(self.max_steps is None or self.max_steps >= 1, "train.max_steps", "must be ≥ 1 or null")
        require(self.context_pool_size >= 0, "train.context_pool_size", "must be ≥ 0 (0 = per-example contexts)")
        require(self.validate_every is None or self.validate_every >= 1, "train.validate_every", "must be ≥ 1 or null (= once per epoch)")
        require(self.checkpoint_every >= 1, "train.checkpoint_every", "must be ≥ 1")
        require(self.val_examples >= 1, "train.val_examples", "must be ≥ 1")
        require(self.val_importance_samples >= 1, "train.val_importance_samples", "must be ≥ 1")
        require(self.val_pool_size >= 0, "train.val_pool_size", "must be ≥ 0")
        require(self.num_threads is None or self.num_threads >= 1, "train.num_threads", "must be ≥ 1 or null (torch's default)")
        require(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None, "train.device",
                f"{self.device!r} is not one of auto, cpu, cuda, cuda:N, mps")


@dataclass(frozen=True)
class ProbeConfig:
    """Linear probe on held-out values (and the cross-value invariance probe).

    ``train_examples``/``test_examples``: how many of a value's train/test images to embed
    (null = all 60k / 10k). Context sets come from a pool of ``pool_size`` images of the same
    value and part. ``reference``: the value whose classifier is tested on all held-out values
    (null = the identity transformation; for smallNORB's factor families, which have none, the
    split's first training value)."""

    train_examples: int | None = None
    test_examples: int | None = None
    pool_size: int = 1000
    max_iter: int = 1000
    C: float = 1.0
    reference: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.train_examples is None or self.train_examples >= 10, "probe.train_examples", "must be ≥ 10 or null")
        require(self.test_examples is None or self.test_examples >= 1, "probe.test_examples", "must be ≥ 1 or null")
        require(self.pool_size >= 0, "probe.pool_size", "must be ≥ 0")
        require(self.C > 0, "probe.C", "must be positive")
        require(self.max_iter >= 1, "probe.max_iter", "must be ≥ 1")


@dataclass(frozen=True)
class EvaluationConfig:
    """Test log-likelihood: IWAE with ``importance_samples`` samples on ``test_examples`` test
    images of each *training* distribution (contexts from the same test images)."""

    test_examples: int = 1000
    importance_samples: int = 100
    pool_size: int = 500

    def __post_init__(self) -> None:
        require(self.test_examples >= 1, "evaluation.test_examples", "must be ≥ 1")
        require(self.importance_samples >= 1, "evaluation.importance_samples", "must be ≥ 1")
        require(self.pool_size >= 0, "evaluation.pool_size", "must be ≥ 0")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None  # the registered model's config dataclass; ``model_name`` names the model
    model_name: str = field(default="metavae", metadata={"internal": True})  # set from ``model.name``
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        n = self.data.context_size
        for key, pool in (("train.context_pool_size", self.train.context_pool_size), ("train.val_pool_size", self.train.val_pool_size),
                          ("evaluation.pool_size", self.evaluation.pool_size), ("probe.pool_size", self.probe.pool_size)):
            require(pool == 0 or pool >= n, key, f"a context pool must hold at least data.context_size = {n} images "
                    f"(got {pool}); 0 means per-example contexts")
        if self.probe.reference is not None:
            grid = GRIDS[self.data.family]
            require(self.probe.reference in grid, "probe.reference", f"{self.probe.reference} is not a {self.data.family} value {list(grid)}")

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        out["model"] = {"name": out.pop("model_name"), **out["model"]}
        return out

    def training_dict(self) -> dict[str, Any]:
        """The sections that determine training (data, model, train): what resume must match."""
        full = self.to_dict()
        return {k: full[k] for k in ("data", "model", "train")}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ExperimentConfig:
        """Validate a whole config dict (a YAML file's content): :func:`experiment_from_dict`."""
        return experiment_from_dict(raw)


class RunConfig(Protocol):
    """What the one :class:`~metavae.training.Trainer` needs of a run's configuration.

    :class:`ExperimentConfig` (the transformed-image experiments) and :class:`TrainingRun` (a run
    started from Python) implement it; each later experiment set's config does too.
    """

    @property
    def train(self) -> TrainConfig: ...

    def to_dict(self) -> dict[str, Any]:
        """Everything, as plain data: written to ``config.yaml`` and into every checkpoint."""
        ...

    def training_dict(self) -> dict[str, Any]:
        """The part that determines training: a resumed run must agree on it (but :data:`RESUMABLE_KEYS`)."""
        ...

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunConfig:
        """Re-validate :meth:`to_dict`'s output (as read back from a checkpoint or ``config.yaml``)."""
        ...


@dataclass(frozen=True)
class TrainingRun:
    """The configuration of a run started from Python (``Trainer(model, task, TrainConfig(...), run_dir)``).

    ``task`` and ``model`` describe what is trained (the task's distributions and event shape, the
    model's class): both are recorded in ``config.yaml`` and in checkpoints, and a resumed run must
    agree with them, as it must with every ``train`` key but :data:`RESUMABLE_KEYS`.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    task: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def training_dict(self) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainingRun:
        return from_dict(cls, raw)


#: keys that may differ when a run is resumed: they change neither the model nor the data nor the
#: path of the parameters, only how long training goes on and how often it reports and saves
RESUMABLE_KEYS = ("train.max_steps", "train.epochs", "train.num_threads", "train.device", "train.validate_every",
                  "train.checkpoint_every", "train.loss_limit")


def resume_conflict(saved: RunConfig, given: RunConfig) -> str | None:
    """``None`` if a run trained with ``saved`` may continue under ``given``, else a sentence
    naming the first differing key that blocks it (``data.*``, ``model.*``, other ``train.*``)."""
    old, new = dict(flatten(saved.training_dict())), dict(flatten(given.training_dict()))
    fixed = ("train.max_steps", "train.epochs") if old.get("train.lr_schedule", "constant") != "constant" else ()
    for key in sorted(set(old) | set(new)):
        if key in fixed and old.get(key) != new.get(key):
            return (f"{key} differs (the run has {old.get(key)!r}, the config gives {new.get(key)!r}); a run with "
                    f"train.lr_schedule={old.get('train.lr_schedule')} has its schedule fixed by its length, so it can "
                    "be resumed but not extended")
        if key not in RESUMABLE_KEYS and old.get(key) != new.get(key):
            return (f"{key} differs (the run has {old.get(key)!r}, the config gives {new.get(key)!r}); "
                    f"only {', '.join(RESUMABLE_KEYS)} may change when resuming")
    return None


def experiment_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a whole config dict (the YAML's content) into an :class:`ExperimentConfig`."""
    from metavae.models import MODELS  # here, not at the top: the models import this package's loading helpers

    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config must be a mapping with sections data, model, train, probe, evaluation; got {raw!r}")
    raw = dict(raw)
    model_raw = raw.pop("model", None)
    if model_raw is None:
        model_raw = {}
    if not isinstance(model_raw, Mapping):
        raise ConfigError(f"config key 'model': expected a mapping (name: one of {', '.join(MODELS)}, plus that model's "
                          f"options), got {model_raw!r}")
    model_raw = dict(model_raw)
    name = model_raw.pop("name", "metavae")
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"config key 'model.name': unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if "model_name" in raw:
        raise ConfigError("unknown config key 'model_name': the model is chosen with model.name (e.g. --set model.name=vae)")
    model_cfg = from_dict(MODELS[name].config_class, model_raw, prefix="model")
    base = from_dict(ExperimentConfig, raw)
    return replace(base, model=model_cfg, model_name=name)


def load_config(path: str | Path | None, overrides: Sequence[tuple[str, Any]] = ()) -> ExperimentConfig:
    """Read a YAML config (or start from defaults if ``path`` is None) and apply dotted overrides."""
    raw = read_config_file(path) if path is not None else {}
    for key, value in overrides:
        set_dotted(raw, key, value)
    return experiment_from_dict(raw)


def with_overrides(config: ExperimentConfig, overrides: list[tuple[str, Any]]) -> ExperimentConfig:
    """``config`` with dotted overrides applied (re-validated)."""
    return load_config(None, [*flatten(config.to_dict()), *overrides])




class RunOfExperiment:
    """What an experiment config with several training runs shares (physics variants, expfam runs).

    The config is one dataclass with an internal field :attr:`RUN_FIELD` (empty for the experiment,
    the run's name in each run's ``config.yaml`` and checkpoints). Subclasses set :attr:`RUN_FIELD`
    and :attr:`TRAINING_KEYS` (the sections that determine a run's training) and implement
    ``for_run(name)``. ``from_dict`` validates over the experiment's own defaults, one section deep,
    so ``train: {lr: 1e-3}`` keeps the experiment's other train settings, not :class:`TrainConfig`'s
    (mappings are merged at every depth: ``evaluation.ranges.gaussian`` keeps the other ranges).
    """

    RUN_FIELD: ClassVar[str] = "run"
    TRAINING_KEYS: ClassVar[tuple[str, ...]] = ()

    def for_run(self, name: str) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        if not out.get(self.RUN_FIELD):
            out.pop(self.RUN_FIELD, None)
        return out

    def training_dict(self) -> dict[str, Any]:
        """The sections that determine the run's training, and its name: what a resumed run must match."""
        full = self.to_dict()
        return {k: full[k] for k in (*self.TRAINING_KEYS, self.RUN_FIELD) if k in full}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Any:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"a {cls.__name__} must be a mapping of config sections, got {raw!r}")
        raw = dict(raw)
        run = raw.pop(cls.RUN_FIELD, "")
        merged = to_dict(cls())
        merged.pop(cls.RUN_FIELD, None)
        config = from_dict(cls, _merge(merged, raw))
        return config.for_run(run) if run else config


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` laid over it, mappings merged at every depth."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out
