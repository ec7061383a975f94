"""metavae: meta-amortized variational inference (Wu, Choi, Goodman & Ermon, AAAI 2020).

The public API, importable from the top level::

    from metavae import DatasetFamily, MetaVAE, MetaVAEConfig, Trainer, TrainConfig, probe

- models behind one seam, ``log_weights(x, context, num_samples, decoder_index, objective)``:
  :class:`MetaVAE`, :class:`NeuralStatistician`, :class:`VariationalHomoencoder`,
  :class:`HomoencoderVampPrior`, :class:`VAE` (and their config dataclasses; :data:`MODELS`), and
  the compiled-inference network :class:`CompiledInference` of the physics experiment;
- the :class:`Task` protocol (a family of distributions) and its implementations
  :class:`DatasetFamily` (bring your own data sets) and :class:`ImageFamilyTask` (the paper's
  transformed MNIST); :class:`Batch`, :class:`Context`;
- the one :class:`Trainer`; the bounds :func:`elbo`, :func:`iwae`, :func:`log_likelihood`;
- evaluation: :func:`probe` (linear probe on held-out distributions),
  :func:`per_distribution_log_likelihood`;
- configuration: :class:`TrainConfig`, :class:`ExperimentConfig`, :func:`load_config`;
- real MNIST: :func:`load_mnist`; errors: :class:`MetaVAEError` and its subclasses.
"""

__version__ = "0.1.0"

from metavae.config import (  # noqa: E402 - the version is defined first: submodules read it
    DataConfig,
    EvaluationConfig,
    ExperimentConfig,
    ProbeConfig,
    TrainConfig,
    TrainingRun,
    load_config,
)
from metavae.data import Batch, Context, DatasetFamily, ImageFamilyTask, Task, load_mnist  # noqa: E402
from metavae.errors import CheckpointError, ConfigError, DataError, DivergenceError, MetaVAEError  # noqa: E402
from metavae.evaluation import per_distribution_log_likelihood, probe  # noqa: E402
from metavae.models import (  # noqa: E402
    MODELS,
    VAE,
    CompiledInference,
    CompiledInferenceConfig,
    HomoencoderVampPrior,
    HomoencoderVampPriorConfig,
    LatentVariableModel,
    MetaVAE,
    MetaVAEConfig,
    NeuralStatistician,
    NeuralStatisticianConfig,
    VAEConfig,
    VariationalHomoencoder,
    VariationalHomoencoderConfig,
)
from metavae.objectives import elbo, iwae, log_likelihood  # noqa: E402
from metavae.training import FitResult, Trainer  # noqa: E402

__all__ = [
    "__version__",
    # models
    "MODELS", "LatentVariableModel", "MetaVAE", "MetaVAEConfig", "NeuralStatistician", "NeuralStatisticianConfig",
    "VariationalHomoencoder", "VariationalHomoencoderConfig", "HomoencoderVampPrior", "HomoencoderVampPriorConfig",
    "VAE", "VAEConfig", "CompiledInference", "CompiledInferenceConfig",
    # tasks and data
    "Task", "Batch", "Context", "DatasetFamily", "ImageFamilyTask", "load_mnist",
    # training and objectives
    "Trainer", "FitResult", "elbo", "iwae", "log_likelihood",
    # evaluation
    "probe", "per_distribution_log_likelihood",
    # configuration
    "TrainConfig", "DataConfig", "ProbeConfig", "EvaluationConfig", "ExperimentConfig", "TrainingRun", "load_config",
    # errors
    "MetaVAEError", "ConfigError", "DataError", "CheckpointError", "DivergenceError",
]
