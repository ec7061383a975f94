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
from collections.abc import Iterator

import torch

from metavae.errors import ConfigError

__all__ = ["resolve_device", "autocast", "grad_scaler", "device_rng_state", "set_device_rng_state", "module_device"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` as given.

    Raises:
        ConfigError: the device is not available on this machine (naming ``train.device``).
    """
    if isinstance(name, torch.device):
        return name
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


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The random-number state of an accelerator (``None`` on the CPU, whose state is torch's global one)."""
    if device.type == "cpu":
        return None
    return torch.get_device_module(device.type).get_rng_state()


def set_device_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    if device.type != "cpu" and state is not None:
        torch.get_device_module(device.type).set_rng_state(state)


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")
