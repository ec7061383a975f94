"""Generative models behind one seam (``log_weights``), by name."""

from metavae.models.base import LatentVariableModel
from metavae.models.compiled_inference import CompiledInference, CompiledInferenceConfig
from metavae.models.homoencoder import VariationalHomoencoder, VariationalHomoencoderConfig
from metavae.models.homoencoder_vamp_prior import HomoencoderVampPrior, HomoencoderVampPriorConfig
from metavae.models.metavae import MetaVAE, MetaVAEConfig
from metavae.models.neural_statistician import NeuralStatistician, NeuralStatisticianConfig
from metavae.models.vae import VAE, VAEConfig

#: the generative models of data points (the image experiments' ``model.name``); the compiled-inference
#: network of the physics experiment is not one of them (it models μ given a measurement)
MODELS: dict[str, type[LatentVariableModel]] = {
    "metavae": MetaVAE,
    "neural_statistician": NeuralStatistician,
    "homoencoder": VariationalHomoencoder,
    "homoencoder_vampprior": HomoencoderVampPrior,
    "vae": VAE,
}

__all__ = [
    "MODELS", "LatentVariableModel", "MetaVAE", "MetaVAEConfig", "NeuralStatistician", "NeuralStatisticianConfig",
    "VariationalHomoencoder", "VariationalHomoencoderConfig", "HomoencoderVampPrior", "HomoencoderVampPriorConfig",
    "VAE", "VAEConfig", "CompiledInference", "CompiledInferenceConfig",
]
