"""The one training loop: Adam on the negative ELBO, validation by IWAE, best/last checkpoints.

The loop knows nothing of particular models: a model contributes ``log_weights`` and the task
contributes batches. Training and validation share :meth:`Trainer.step`, keyed by stage.

Model selection: the validation metric is the IWAE estimate of the model's ``log p(x)`` (higher is
better), averaged over the examples of each training distribution and then over
distributions. Resume is exact: the checkpoint holds model, optimizer, the data generator's
and torch's RNG states and the step; validation runs under a forked, fixed-seed RNG so it
neither perturbs training randomness nor varies between evaluations. A resumed run may be given
a larger ``max_steps`` or ``epochs`` (and other keys of
:data:`~metavae.config.RESUMABLE_KEYS`): the extended run is bit-identical to one trained that
long without interruption.

Divergence policy: the step stops with a :class:`~metavae.errors.DivergenceError` naming the step
and the last good checkpoint as soon as the loss is not finite (or exceeds ``train.loss_limit`` in
absolute value), the gradient norm is not finite (checked before the optimizer step, so the
parameters are untouched), a parameter becomes non-finite after the step, or the validation IWAE
is not finite. Nothing of that state is written: checkpoints refuse non-finite tensors too.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metavae.config import RunConfig, TrainConfig, TrainingRun, read_config_file, resume_conflict, to_dict
from metavae.data.task import Batch, Task
from metavae.errors import ConfigError, DivergenceError, MetaVAEError, RunDirectoryError
from metavae.evaluation.log_likelihood import per_distribution_log_likelihood
from metavae.models.base import noise_shard
from metavae.objectives import elbo
from metavae.training.checkpoint import RESUME_KEYS, first_non_finite, load_checkpoint, load_model_state, save_checkpoint
from metavae.training.devices import autocast, device_rng_state, grad_scaler, resolve_device, set_device_rng_state
from metavae.training.distributed import setup_distributed, shard_rows
from metavae.training.run_directory import RunDirectory

log = logging.getLogger(__name__)

__all__ = ["Trainer", "FitResult"]


@dataclass
class FitResult:
    step: int
    best_val: float
    best_step: int
    seconds: float


class Trainer:
    """Train ``model`` on any :class:`~metavae.data.task.Task` as ``config`` says, writing into ``run_dir``.

    Args:
        model: anything with the seam ``log_weights(x, context, num_samples, decoder_index=…,
            objective=…) → (num_samples, B)`` (every :class:`~metavae.models.LatentVariableModel`).
        task: the family of distributions: training and validation batches.
        config: a :class:`~metavae.config.TrainConfig` (a run started from Python: the task's
            names and event shape and the model's class are recorded beside it), or a whole run
            config such as :class:`~metavae.config.ExperimentConfig` (the command line's).
        run_dir: the run directory.

    Files: see :class:`~metavae.training.run_directory.RunDirectory` (``config.yaml``,
    ``metrics.jsonl``, ``train.log``, ``checkpoints/{last,best}.pt``). Constructing a trainer
    touches no file; :meth:`fit` checks the task against the settings, then claims the run directory.
    """

    def __init__(self, model: torch.nn.Module, task: Task, config: RunConfig | TrainConfig, run_dir: str | Path) -> None:
        if isinstance(config, TrainConfig):
            config = TrainingRun(config, task=describe_task(task), model={"class": type(model).__name__})
        self.model = model
        self.task = task
        self.config: RunConfig = config
        self.train_cfg = config.train
        self.run = RunDirectory(run_dir)
        self.dist, self.device = setup_distributed(resolve_device(self.train_cfg.device))  # torchrun: this rank's place
        self.precision = self.train_cfg.precision
        model.to(self.device)  # parameters move in place: the optimizer below sees them on the device
        task.to(self.device)
        self._parallel = None
        if self.dist.active:  # gradients averaged across ranks; parameters broadcast from rank 0 now
            self._parallel = torch.nn.parallel.DistributedDataParallel(
                _Seam(model), device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.scaler = grad_scaler(self.device, self.precision)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.train_cfg.lr)
        self.generator = torch.Generator().manual_seed(self.train_cfg.seed)
        self.step_count = 0
        self.best_val = float("-inf")
        self.best_step = -1
        self._val_batch: Batch | None = None
        self._running = (0.0, 0)  # train loss sum and count since the last validation
        self._saved_step: int | None = None  # step of the last checkpoint written or resumed

    # ---------------------------------------------------------------- one step, any stage
    def step(self, batch: Batch, stage: str) -> dict[str, Any]:
        """``train``: one Adam step on −ELBO, returns the loss. ``val``: IWAE per distribution.

        The batch is moved to the trainer's device; the model runs under autocast in
        ``train.precision`` (its log-weights, hence the loss, are float32).
        """
        batch = batch.to(self.device)
        if stage == "train":
            self.model.train()
            if self._parallel is None:
                with autocast(self.device, self.precision):
                    log_w = self.model.log_weights(batch.x, batch.context, 1, decoder_index=batch.decoder_index,
                                                   objective="training")  # (1, B)
            else:  # this rank's share of the global batch, perturbed as in the one-process run
                rows = shard_rows(batch.x.shape[0], self.dist.rank, self.dist.world_size)
                part = batch.shard(rows)
                with autocast(self.device, self.precision), noise_shard(rows, batch.x.shape[0]):
                    log_w = self._parallel(part.x, part.context, part.decoder_index)  # (1, B / world_size)
            loss = -elbo(log_w.float()).mean()
            value = self.dist.mean(float(loss.detach()))  # the global batch's loss, the same on every rank
            limit = self.train_cfg.loss_limit
            if not math.isfinite(value) or (limit is not None and abs(value) > limit):
                self._diverged(f"the training loss is {value:.4g}" + (f" (train.loss_limit {limit:g})" if limit else ""))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.step_count)
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
            if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                self._diverged(f"the gradient norm is {grad_norm}")
            self.scaler.step(self.optimizer)  # fp16: an overflowed step is skipped and the scale lowered
            self.scaler.update()
            bad = first_non_finite(dict(self.model.named_parameters()))
            if bad is not None:
                self._diverged(f"parameter {bad} became non-finite after the optimizer step")
            return {"loss": value}
        with autocast(self.device, self.precision):
            per_dist = per_distribution_log_likelihood(self.model, batch, self.task.num_decoders,  # type: ignore[arg-type]
                                                       self.train_cfg.val_importance_samples, self.train_cfg.seed + 1)
        names = self.task.distribution_names()
        if not bool(torch.isfinite(per_dist).all()):
            self._diverged(f"the validation IWAE is not finite ({dict(zip(names, per_dist.tolist()))})", at=self.step_count)
        return {"val_iwae": float(per_dist.mean()), "val_iwae_per_distribution": dict(zip(names, per_dist.tolist()))}

    def total_steps(self) -> int:
        """The run's length: ``train.max_steps``, capped by ``train.epochs`` × the task's steps per epoch."""
        cfg = self.train_cfg
        per_epoch = self.task.batches_per_epoch(cfg.batch_size)
        return per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)

    def learning_rate(self, step: int) -> float:
        """The learning rate of step ``step`` (from 0) under ``train.lr_schedule`` (see :class:`TrainConfig`)."""
        cfg = self.train_cfg
        if cfg.lr_schedule == "constant":
            return cfg.lr
        total, f = self.total_steps(), cfg.lr_final_fraction
        return cfg.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))

    def _diverged(self, what: str, at: int | None = None) -> None:
        """Stop: ``what`` went wrong at step ``at`` (default: the step being taken)."""
        step = self.step_count + 1 if at is None else at
        if self._saved_step is None:
            last = "no checkpoint had been written yet"
        else:
            last = f"last good checkpoint: {self.run.last_checkpoint} (step {self._saved_step})"
        raise DivergenceError(f"training diverged at step {step}: {what}; nothing of this state was saved; "
                              f"{last}. Lower train.lr (or check the data) and start again with --overwrite")

    # ---------------------------------------------------------------- bookkeeping
    def _payload(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "state_dict": _to_cpu(self.model.state_dict()),  # device-independent: loads anywhere
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scaler": self.scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": self.generator.get_state(),
                    "device": device_rng_state(self.device)},
            "step": self.step_count,
            "best": {"val_iwae": self.best_val, "step": self.best_step},
            "running_loss": list(self._running),
        }

    def _save(self, path: Path) -> None:
        # the other ranks hold the same state; a failed write stops every rank
        self.dist.run_on_main(lambda: save_checkpoint(path, self._payload()))
        if path == self.run.last_checkpoint:
            self._saved_step = self.step_count

    def _resumable_payload(self) -> dict[str, Any] | None:
        """The checkpoint to continue from, checked against this trainer's config and model
        (read-only: a refusal leaves the run directory untouched); ``None`` = start from step 0."""
        path = self.run.last_checkpoint
        if path.is_file():
            payload = load_checkpoint(path, RESUME_KEYS)
            try:
                saved = type(self.config).from_dict(payload["config"])
            except ConfigError as exc:
                raise ConfigError(f"{path}: its stored config is not valid for this metavae ({exc})") from None
            source = str(path)
        elif self.run.config_path.is_file():  # killed before its first checkpoint: the config must still agree
            payload, source = None, str(self.run.config_path)
            saved = type(self.config).from_dict(read_config_file(self.run.config_path))
        else:
            return None
        conflict = resume_conflict(saved, self.config)
        if conflict:
            raise ConfigError(f"cannot resume {self.run.path} ({source}): {conflict}; to train with the new settings use "
                              "another --out, or --overwrite to move this run aside")
        if payload is not None:
            load_model_state(self.model, payload["state_dict"], path)
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        path = self.run.last_checkpoint
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
            torch.set_rng_state(payload["rng"]["torch"])
            self.generator.set_state(payload["rng"]["data"])
            set_device_rng_state(self.device, payload["rng"].get("device"))
            if payload.get("scaler"):
                self.scaler.load_state_dict(payload["scaler"])
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: optimizer or random state does not fit this model "
                              f"({' '.join(str(exc).split())[:200]}); retrain with --overwrite") from None
        self.step_count = self._saved_step = int(payload["step"])
        self.best_val, self.best_step = float(payload["best"]["val_iwae"]), int(payload["best"]["step"])
        self._running = (float(payload["running_loss"][0]), int(payload["running_loss"][1]))
        log.info("resumed from %s at step %d", path, self.step_count)

    def validate(self) -> dict[str, Any]:
        if self._val_batch is None:
            self._val_batch = self.task.validation_batch(self.train_cfg.val_examples, self.train_cfg.val_pool_size)
        return self.step(self._val_batch, "val")

    # ---------------------------------------------------------------- the loop
    def fit(self, resume: bool = False, progress: bool = True, overwrite: bool = False) -> FitResult:
        """Train until ``max_steps`` / ``epochs``, writing into the run directory.

        ``resume``: continue the run in the directory (a fresh start if there is none).
        ``overwrite``: move an earlier run in the directory aside and start afresh. Without
        either, a directory holding a run is refused (:class:`~metavae.errors.RunDirectoryError`).
        """
        self.task.check(self.train_cfg)
        self._check_model_fits_task()
        if self.dist.active:  # the global batch must split into equal shares, checked before the directory is touched
            shard_rows(self.train_cfg.batch_size * self.task.num_decoders, self.dist.rank, self.dist.world_size)
        main = self.dist.is_main  # only rank 0 touches the run directory
        payload, error = None, None
        try:
            if main:
                state = self.run.inspect(resume=resume, overwrite=overwrite)
                payload = self._resumable_payload() if state == "run" and resume else None
                signature = _file_signature(self.run.last_checkpoint) if payload is not None else None
                self.run.claim(state, overwrite=overwrite)
        except Exception as exc:  # told to the other ranks first, so that none waits forever
            error = exc
        # rank 0 tells the others whether it started and, if it resumes, the checkpoint itself (no shared disk needed)
        start = self.dist.broadcast((None if error is None else f"{error}", payload))
        if error is not None:
            raise error
        if start[0] is not None:
            raise RunDirectoryError(f"rank 0 could not start the run: {start[0]}")
        if not main and start[1] is not None:  # rank 0 resumes: so does this rank, from the same state
            payload = start[1]
            load_model_state(self.model, payload["state_dict"], self.run.last_checkpoint)
        handler = None
        try:
            if payload is not None:
                if main and _file_signature(self.run.last_checkpoint) != signature:
                    raise RunDirectoryError(f"{self.run.last_checkpoint} changed while this run was starting; run the command again")
                self._restore(payload)
                if main:
                    self.run.truncate_metrics(self.step_count)  # drop what was logged after that checkpoint
            elif main and state == "run" and resume:  # resumed before its first checkpoint: start over inside it
                self.run.truncate_metrics(0)
            if main:
                self.run.write_config(self.config)
                handler = _attach_log_file(self.run.log_path)
            if self.train_cfg.num_threads:
                torch.set_num_threads(self.train_cfg.num_threads)
            return self._loop(progress and main)
        except MetaVAEError as exc:  # the reason a run stopped belongs in its log (the CLI prints it once)
            if handler is not None:
                handler.handle(logging.makeLogRecord({"name": log.name, "levelno": logging.ERROR, "levelname": "ERROR",
                                                      "msg": str(exc)}))
            raise
        finally:
            if handler is not None:
                logging.getLogger("metavae").removeHandler(handler)
                handler.close()
            self.run.release()
            self.dist.close()  # leave a process group this trainer joined (torchrun: one run per process)

    def _check_model_fits_task(self) -> None:
        """Refuse (``ValueError``) a model built for another event shape or number of decoders,
        before the run directory is touched (models that do not declare these are not checked)."""
        event = getattr(self.model, "event_shape", None)
        if event is not None and tuple(event) != tuple(self.task.event_shape):
            raise ValueError(f"model: built for data points of shape {tuple(event)}, but the task's are "
                             f"{tuple(self.task.event_shape)}; build it with the task's event_shape")
        decoders = getattr(self.model, "num_decoders", None)
        if decoders is not None and decoders not in (1, self.task.num_decoders):
            raise ValueError(f"model: has {decoders} decoders, but the task has {self.task.num_decoders} training "
                             "distributions; build it with the task's num_decoders")

    def restore_best(self) -> int:
        """Load the best checkpoint's parameters (highest validation IWAE) into the model; returns its step.

        After :meth:`fit` the model holds the *last* step's parameters; the command line evaluates
        the best ones, and so should a Python user who wants the same numbers."""
        payload = load_checkpoint(self.run.best_checkpoint)
        load_model_state(self.model, payload["state_dict"], self.run.best_checkpoint)
        return int(payload["step"])

    def _loop(self, progress: bool) -> FitResult:
        cfg = self.train_cfg
        per_epoch = self.task.batches_per_epoch(cfg.batch_size)
        total = self.total_steps()
        validate_every = cfg.validate_every or per_epoch
        start = time.perf_counter()
        with tqdm(total=total, initial=self.step_count, disable=not progress, desc="train", unit="step",
                  dynamic_ncols=True) as bar:
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
                    self.dist.run_on_main(lambda record=record: self.run.append_metrics(record))
                    bar.set_postfix(loss=f"{record['train_loss']:.1f}", val_iwae=f"{val['val_iwae']:.1f}")
                    log.info("step %d  train −ELBO %.2f  val IWAE %.2f%s", self.step_count, record["train_loss"],
                             val["val_iwae"], "  (best)" if improved else "")
                    if improved:
                        self._save(self.run.best_checkpoint)
                if self.step_count % cfg.checkpoint_every == 0 or done or self.step_count % validate_every == 0:
                    self._save(self.run.last_checkpoint)
        self.dist.barrier()  # every rank leaves with rank 0's last writes done
        return FitResult(self.step_count, self.best_val, self.best_step, time.perf_counter() - start)


class _Seam(torch.nn.Module):
    """The training log-weights as ``forward``, so that ``DistributedDataParallel`` sees the model's
    computation (it synchronises gradients of what runs through ``forward``)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: Any, decoder_index: torch.Tensor) -> torch.Tensor:
        return self.model.log_weights(x, context, 1, decoder_index=decoder_index, objective="training")


def _to_cpu(obj: Any) -> Any:
    """Every tensor of a (nested) state on the CPU (unchanged, not copied, if it is there already)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def describe_task(task: Task) -> dict[str, Any]:
    """What a run started from Python records of its task (and checks on resume): its class and
    :meth:`~metavae.data.task.Task.describe` (settings and a fingerprint of the data)."""
    return {"class": type(task).__name__, **to_dict(task.describe())}


def _file_signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _attach_log_file(path: Path) -> logging.Handler:
    """Copy the library's log records into the run's ``train.log``."""
    try:
        handler = logging.FileHandler(path)
    except OSError as exc:
        raise RunDirectoryError(f"cannot write {path}: {exc.strerror or exc}") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("metavae").addHandler(handler)
    return handler
