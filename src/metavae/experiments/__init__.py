"""Orchestration of the paper's experiment sets, one module each, every module with the same verbs:
``build_task`` (config → :class:`~metavae.data.task.Task`), ``train`` (into a run directory),
``evaluate`` (a finished run) and ``report`` (runs → tables and figures). The command line
dispatches to them; the library underneath (tasks, models, the one trainer, evaluation) knows
nothing of experiments.

- :mod:`metavae.experiments.transformed_images`: MNIST under rotate / scale / shear (Fig. 6);
- :mod:`metavae.experiments.physics`: compiled inference on the inclined plane (Fig. 1);
- :mod:`metavae.experiments.expfam`: learning sufficient statistics of exponential families (Figs. 2–3).
"""

from metavae.experiments import expfam, physics, transformed_images
from metavae.experiments.common import build_registered_model, resolve_data_root

#: experiment set name → its module (each with build_task, train, evaluate, report)
EXPERIMENTS = {"transformed_images": transformed_images, "physics": physics, "expfam": expfam}

__all__ = ["EXPERIMENTS", "build_registered_model", "expfam", "physics", "resolve_data_root", "transformed_images"]
