"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``), gloo on CPU, nccl on CUDA.

How N ranks optimise exactly the objective of one process with the same global batch:

- every rank draws the *whole* global batch from the shared seed (the same data generator state
  on every rank) and keeps its share, a contiguous block of ``B/N`` rows (:func:`shard_rows`);
  its context sets keep only the pool elements they use;
- the reparameterisation noise of the whole batch is drawn on every rank from the same torch
  seed and each rank uses its rows of it (:func:`metavae.models.base.noise_shard`), so every
  example is perturbed exactly as in the one-process run;
- each rank's loss is the mean over its rows and ``DistributedDataParallel`` averages the
  gradients, i.e. the gradient of the mean over the global batch; the parameters start equal
  (broadcast from rank 0) and stay equal;
- every decision (divergence of the loss, gradient norm, parameters; validation) is taken on
  values that are the same on every rank: the loss is averaged across ranks first, the gradient
  and parameters are equal after the all-reduce, and validation is computed by every rank on the
  same fixed batch. Only rank 0 writes (run directory, checkpoints, metrics, logs).

The one-process run draws the same random numbers in the same order, so the two agree up to the
floating-point rounding of different matrix shapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from metavae.errors import ConfigError

__all__ = ["Distributed", "setup_distributed", "shard_rows"]


@dataclass
class Distributed:
    """This process's place in a data-parallel run (``world_size = 1``: a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process initialised the process group (and tears it down)
    device: torch.device = torch.device("cpu")  # where collectives put their tensors (nccl: the rank's GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (every rank gets the same number)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float32, device=self.device)  # float32: every backend reduces it
        dist.all_reduce(t)
        return float(t) / self.world_size

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def run_on_main(self, action: Any) -> None:
        """Rank 0 runs ``action()`` (a write); every rank then learns whether it failed and raises if so,
        so that no rank waits in the next collective for a rank that has stopped."""
        error = None
        if self.is_main:
            try:
                action()
            except Exception as exc:  # told to the other ranks first
                error = exc
        failure = self.broadcast(None if error is None else str(error))
        if error is not None:
            raise error
        if failure is not None:
            from metavae.errors import RunDirectoryError

            raise RunDirectoryError(f"rank 0 stopped: {failure}")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), if there is one.

    Returns the rank's place and its device: ``cuda:LOCAL_RANK`` when training on CUDA, else
    ``device``. The backend is nccl for CUDA and gloo otherwise — the only device-specific choice.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), device
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "mps":
        raise ConfigError("config key 'train.device': data-parallel training runs on CPUs (gloo) or CUDA GPUs (nccl), "
                          "not on MPS; train on one process, or use cpu")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # torchrun: one GPU per local rank
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
        except (RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the data-parallel run (rank {rank} of {world}): {' '.join(str(exc).split())[:200]}; "
                              "launch with torchrun (or metavae train --nproc N)") from None
        owns = True
    return Distributed(rank, world, local_rank, owns, device if device.type == "cuda" else torch.device("cpu")), device


def shard_rows(batch_size: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous block of a global batch of ``batch_size`` rows (equal blocks)."""
    if batch_size % world_size:
        raise ConfigError(f"config key 'train.batch_size': the global batch of {batch_size} examples does not split into "
                          f"{world_size} equal shares; choose a batch size that makes batch_size × training distributions "
                          f"a multiple of {world_size}")
    share = batch_size // world_size
    return slice(rank * share, (rank + 1) * share)
