"""The one training loop: Adam on the negative ELBO, validation by IWAE, best/last checkpoints.

The loop knows nothing of particular models: a model contributes ``log_weights`` and the task
contributes batches. Training and validation share :meth:`Trainer.step`, keyed by stage.

Model selection: the validation metric is the IWAE estimate of the model's ``log p(x)`` (higher is
better), averaged over the examples of each training distribution and then over
distributions. Resume is exact: the checkpoint holds model, optimizer, the data generator's
and torch's RNG states and the step; validation runs under a forked, fixed-seed RNG so it
neither perturbs training randomness nor varies between evaluations.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metavae.config import ExperimentConfig, experiment_from_dict
from metavae.data.image_task import Batch, ImageFamilyTask
from metavae.errors import CheckpointError
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.models.base import LatentVariableModel
from metavae.objectives import elbo
from metavae.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    step: int
    best_val: float
    best_step: int
    seconds: float


class Trainer:
    """Train ``model`` on ``task`` as ``config.train`` says, writing into ``run_dir``.

    Files: ``metrics.jsonl`` (one JSON object per log event), ``checkpoints/last.pt``,
    ``checkpoints/best.pt``.
    """

    def __init__(self, model: LatentVariableModel, task: ImageFamilyTask, config: ExperimentConfig, run_dir: Path) -> None:
        self.model = model
        self.task = task
        self.config = config
        self.train_cfg = config.train
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.train_cfg.lr)
        self.generator = torch.Generator().manual_seed(self.train_cfg.seed)
        self.step_count = 0
        self.best_val = float("-inf")
        self.best_step = -1
        self._val_batch: Batch | None = None
        self._running = (0.0, 0)  # train loss sum and count since the last validation

    # ---------------------------------------------------------------- one step, any stage
    def step(self, batch: Batch, stage: str) -> dict[str, Any]:
        """``train``: one Adam step on −ELBO, returns the loss. ``val``: IWAE per distribution."""
        if stage == "train":
            self.model.train()
            log_w = self.model.log_weights(batch.x, batch.context, 1, decoder_index=batch.decoder_index,
                                           objective="training")  # (1, B)
            loss = -elbo(log_w).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return {"loss": float(loss.detach())}
        per_dist = per_distribution_log_likelihood(self.model, batch, self.task.num_decoders,
                                                   self.train_cfg.val_importance_samples, self.train_cfg.seed + 1)
        names = self.task.distribution_names()
        return {"val_iwae": float(per_dist.mean()), "val_iwae_per_distribution": dict(zip(names, per_dist.tolist()))}

    # ---------------------------------------------------------------- bookkeeping
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": self.generator.get_state()},
            "step": self.step_count,
            "best": {"val_iwae": self.best_val, "step": self.best_step},
            "running_loss": list(self._running),
        }

    def _write_metrics(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _resume(self) -> None:
        path = self.ckpt_dir / "last.pt"
        payload = load_checkpoint(path)
        if experiment_from_dict(payload["config"]).training_dict() != self.config.training_dict():
            raise CheckpointError(
                f"{path} was written with a different config; resume with the run's own config.yaml "
                f"or start a new --out directory"
            )
        self.model.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(payload["optimizer"])
        torch.set_rng_state(payload["rng"]["torch"])
        self.generator.set_state(payload["rng"]["data"])
        self.step_count = int(payload["step"])
        self.best_val, self.best_step = float(payload["best"]["val_iwae"]), int(payload["best"]["step"])
        self._running = (float(payload["running_loss"][0]), int(payload["running_loss"][1]))
        if self.metrics_path.exists():  # drop what the interrupted run logged after its last checkpoint
            kept = [ln for ln in self.metrics_path.read_text().splitlines() if json.loads(ln)["step"] <= self.step_count]
            self.metrics_path.write_text("".join(ln + "\n" for ln in kept))
        log.info("resumed from %s at step %d", path, self.step_count)

    def validate(self) -> dict[str, Any]:
        if self._val_batch is None:
            self._val_batch = self.task.evaluation_batch(self.task.val_part, self.task.val_index,
                                                         self.train_cfg.val_examples, self.train_cfg.val_pool_size)
        return self.step(self._val_batch, "val")

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False, progress: bool = True) -> FitResult:
        cfg = self.train_cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (self.ckpt_dir / "last.pt").exists():
            self._resume()
        else:  # a fresh start: nothing of an earlier run in this directory may be resumed or selected
            self.metrics_path.unlink(missing_ok=True)
            for old in ("last.pt", "best.pt"):
                (self.ckpt_dir / old).unlink(missing_ok=True)
        per_epoch = self.task.batches_per_epoch(cfg.batch_size)
        total = per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)
        validate_every = cfg.validate_every or per_epoch
        start = time.perf_counter()
        bar = tqdm(total=total, initial=self.step_count, disable=not progress, desc="train", unit="step", dynamic_ncols=True)
        while self.step_count < total:
            epoch, within = divmod(self.step_count, per_epoch)
            batch = self.task.train_batch(epoch, within, cfg.batch_size, cfg.context_pool_size, self.generator)
            out = self.step(batch, "train")
            self.step_count += 1
            self._running = (self._running[0] + out["loss"], self._running[1] + 1)
            bar.update(1)
            done = self.step_count == total
            if self.step_count % validate_every == 0 or done:
                val = self.validate()
                record = {"step": self.step_count, "epoch": self.step_count / per_epoch,
                          "train_loss": self._running[0] / self._running[1], **val, "seconds": time.perf_counter() - start}
                self._running = (0.0, 0)
                improved = val["val_iwae"] > self.best_val
                if improved:
                    self.best_val, self.best_step = val["val_iwae"], self.step_count
                self._write_metrics(record)
                bar.set_postfix(loss=f"{record['train_loss']:.1f}", val_iwae=f"{val['val_iwae']:.1f}")
                log.info("step %d  train −ELBO %.2f  val IWAE %.2f%s", self.step_count, record["train_loss"],
                         val["val_iwae"], "  (best)" if improved else "")
                if improved:
                    save_checkpoint(self.ckpt_dir / "best.pt", self._payload())
            if self.step_count % cfg.checkpoint_every == 0 or done or self.step_count % validate_every == 0:
                save_checkpoint(self.ckpt_dir / "last.pt", self._payload())
        bar.close()
        return FitResult(self.step_count, self.best_val, self.best_step, time.perf_counter() - start)
