"""One trainer for every model and every task, with atomic checkpoints and exact resume."""

from metavae.training.checkpoint import load_checkpoint, save_checkpoint
from metavae.training.run_directory import RunDirectory
from metavae.training.trainer import FitResult, Trainer

__all__ = ["FitResult", "RunDirectory", "Trainer", "load_checkpoint", "save_checkpoint"]
