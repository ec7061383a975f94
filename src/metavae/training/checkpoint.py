"""Checkpoints: plain dicts of tensors and builtins, written atomically, read with ``weights_only``.

Contents: ``{"config", "state_dict", "optimizer", "rng", "step", "best", "running_loss",
"library_version", "format"}``. A checkpoint is never written with a non-finite tensor in its
parameters or optimizer state, and is checked (keys, types, shapes, finiteness) before use;
every problem is a :class:`~metavae.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metavae import __version__
from metavae.errors import CheckpointError, DivergenceError
from metavae.files import atomic_write

__all__ = ["FORMAT", "EVALUATION_KEYS", "RESUME_KEYS", "first_non_finite", "save_checkpoint", "load_checkpoint", "load_model_state"]


FORMAT = 1

#: what each use of a checkpoint needs: evaluating a model, or continuing its training
EVALUATION_KEYS = ("config", "state_dict", "step")
RESUME_KEYS = (*EVALUATION_KEYS, "optimizer", "rng", "best", "running_loss")


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested dict/list, with a dotted name."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def first_non_finite(obj: Any) -> str | None:
    """Name of the first floating-point tensor in ``obj`` holding NaN or ±inf, else ``None``.

    Tested as ``isfinite(max |t|)``: the maximum propagates NaN and keeps ±inf, so this is exact,
    and it is far cheaper than a full ``isfinite(t).all()`` (it runs after every training step)."""
    with torch.no_grad():
        for name, t in _tensors(obj):
            if t.is_floating_point() and t.numel() and not math.isfinite(float(t.abs().amax())):
                return name
        return None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically; refuse (:class:`DivergenceError`) a non-finite state."""
    bad = first_non_finite({"state_dict": payload.get("state_dict"), "optimizer": payload.get("optimizer")})
    if bad is not None:
        raise DivergenceError(f"refusing to write {path}: {bad} holds non-finite values (the run diverged); "
                              "the previous checkpoint is kept")
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {**payload, "library_version": __version__, "format": FORMAT}
    atomic_write(path, lambda fh: torch.save(full, fh), error=CheckpointError,
                 hint="free some space, then resume with --resume (the previous checkpoint is intact)")


def load_checkpoint(path: Path, required: tuple[str, ...] = EVALUATION_KEYS) -> dict[str, Any]:
    """Read and check a checkpoint; missing, unreadable, incomplete or non-finite files give a
    :class:`CheckpointError` naming ``path``. ``required``: the keys the caller needs."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first (`metavae train CONFIG --out DIR`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower() and "can still be loaded" not in str(exc).lower():
            raise CheckpointError(f"{path}: not a readable metavae checkpoint (damaged or not a checkpoint)") from None
        raise CheckpointError(f"{path}: holds Python objects beyond tensors and plain containers, which metavae does not "
                              "unpickle (weights_only=True); it was not written by metavae — retrain") from None
    except Exception as exc:  # noqa: BLE001 - any other reading failure means the same thing to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable metavae checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: incompatible checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'}, "
            f"this metavae {__version__} reads format {FORMAT}); retrain with this version"
        )
    missing = [k for k in required if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: damaged or incomplete checkpoint, it lacks {', '.join(missing)}; "
                              "use the run's other checkpoint (best.pt / last.pt) or retrain")
    _check_types(path, payload, required)
    bad = first_non_finite({k: payload[k] for k in ("state_dict", "optimizer") if k in required})
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} holds non-finite values (NaN/inf): the run it comes from diverged; "
                              "use an earlier checkpoint or retrain with a lower train.lr")
    return payload


def _check_types(path: Path, payload: dict[str, Any], required: tuple[str, ...]) -> None:
    expected: dict[str, tuple[type, ...]] = {"config": (dict,), "state_dict": (dict,), "step": (int,), "optimizer": (dict,),
                                            "rng": (dict,), "best": (dict,), "running_loss": (list, tuple)}
    for key in required:
        if not isinstance(payload[key], expected[key]):
            raise CheckpointError(f"{path}: damaged checkpoint, '{key}' is a {type(payload[key]).__name__}; retrain")
    if not all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
        raise CheckpointError(f"{path}: damaged checkpoint, its state_dict holds non-tensors; retrain")
    if "rng" in required and not all(isinstance(payload["rng"].get(k), torch.Tensor) for k in ("torch", "data")):
        raise CheckpointError(f"{path}: damaged checkpoint, its rng states are missing; retrain")
    if "best" in required and not {"val_iwae", "step"} <= set(payload["best"]):
        raise CheckpointError(f"{path}: damaged checkpoint, 'best' lacks val_iwae/step; retrain")


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """``model.load_state_dict(state_dict)`` after checking names and shapes; a mismatch names the
    first differing parameter and ``path``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        what = f"lacks parameter '{missing[0]}'" if missing else f"has a parameter '{unexpected[0]}' the model does not"
        raise CheckpointError(f"{path}: {what}: its parameters do not fit the model its config describes; "
                              "was it written by another version or edited?")
    for k, v in own.items():
        if tuple(state_dict[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: parameter '{k}' has shape {tuple(state_dict[k].shape)} but the model its config "
                                  f"describes needs {tuple(v.shape)}: its parameters do not fit the model")
    model.load_state_dict(state_dict)
