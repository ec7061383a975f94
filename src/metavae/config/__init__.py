"""Configuration: the schema (frozen dataclasses with validated fields) and the machinery that
builds them from YAML and ``--set key=value`` overrides.

- :mod:`metavae.config.schema`: ``DataConfig``, ``TrainConfig``, ``ProbeConfig``,
  ``EvaluationConfig``, ``ExperimentConfig`` (a YAML experiment file), ``TrainingRun`` (a run
  started from Python) and the :class:`RunConfig` protocol the trainer reads.
- :mod:`metavae.config.loading`: dict → dataclass validation, YAML 1.2 parsing, overrides,
  atomic saving.
"""

from metavae.config.loading import (
    flatten,
    from_dict,
    parse_overrides,
    parse_yaml,
    read_config_file,
    require,
    require_positive,
    save_config,
    set_dotted,
    to_dict,
)
from metavae.config.schema import (
    RESUMABLE_KEYS,
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ProbeConfig,
    RunConfig,
    TrainConfig,
    TrainingRun,
    experiment_from_dict,
    load_config,
    resume_conflict,
    with_overrides,
)

__all__ = [
    "RESUMABLE_KEYS", "DataConfig", "EvaluationConfig", "ExperimentConfig", "ProbeConfig", "RunConfig", "TrainConfig",
    "TrainingRun", "experiment_from_dict", "flatten", "from_dict", "load_config", "parse_overrides", "parse_yaml",
    "read_config_file", "require", "require_positive", "resume_conflict", "save_config", "set_dotted", "to_dict",
    "with_overrides",
]
