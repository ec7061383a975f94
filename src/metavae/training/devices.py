"""Devices and numerical precision, chosen by name (``train.device``, ``train.precision``).

One code path for every device: the only device-specific choice is the backend itself (which
``torch.device``, which autocast ``device_type``, which random-number state). Nothing here
branches on CUDA or MPS beyond asking torch whether they are available.

Precision: ``bf16``/``fp16`` run the networks under ``torch.autocast`` (matrix products in the
lower precision); the models build their distributions from float32 parameters, so
log-densities, log-sum-exps and KL terms stay in float32. ``fp16`` adds a gradient scaler
(``torch.amp.GradScaler``), which skips a step whose scaled gradients overflowed and lowers the
scale; ``bf16`` has float32's range and needs none.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from metavae.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["resolve_device", "autocast", "grad_scaler", "device_rng_state", "set_device_rng_state", "module_device", "forked_rng"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device, fallback: bool = False) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` as given.

    ``fallback=True`` (evaluating a finished run on another machine): an unavailable device gives
    the CPU, with a warning, instead of an error.

    Raises:
        ConfigError: the device is not available on this machine (naming ``train.device``).
    """
    if isinstance(name, torch.device):
        return name
    if fallback:
        try:
            return resolve_device(name)
        except ConfigError as exc:
            log.warning("%s; using the CPU instead", exc)
            return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'train.device': {name!r} requested but this torch has no usable CUDA device "
                              "(torch.cuda.is_available() is False); use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"config key 'train.device': {name!r} requested but there are only "
                              f"{torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"config key 'train.device': {name!r} requested but MPS is not available; use cpu or auto")
    return device


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.autocast`` on ``device`` in ``precision`` (``fp32``: no autocast)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for ``fp16`` (disabled it passes gradients through unchanged)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def device_rng_state(device: torch.device) -> dict[str, Any] | None:
    """The random-number state of an accelerator, with its type (``None`` on the CPU, whose state is
    torch's global one)."""
    if device.type == "cpu":
        return None
    return {"type": device.type, "state": torch.get_device_module(device.type).get_rng_state()}


def set_device_rng_state(device: torch.device, saved: dict[str, Any] | None) -> None:
    """Restore a state saved by :func:`device_rng_state` if it is of this device's type (a run resumed
    on another kind of device continues with that device's own stream: correct, not bit-identical)."""
    if device.type != "cpu" and isinstance(saved, dict) and saved.get("type") == device.type:
        torch.get_device_module(device.type).set_rng_state(saved["state"])


def forked_rng(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.random.fork_rng`` of the CPU and of ``device``: seeding inside it changes neither stream afterwards."""
    devices = [] if device.type == "cpu" else [device.index or 0]
    return torch.random.fork_rng(devices=devices, device_type=device.type if device.type != "cpu" else "cuda")


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
