"""Checkpoints: plain dicts of tensors and builtins, written atomically, read with ``weights_only``.

Contents: ``{"config", "state_dict", "optimizer", "rng", "step", "best", "library_version", "format"}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from metavae import __version__
from metavae.errors import CheckpointError

FORMAT = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({**payload, "library_version": __version__, "format": FORMAT}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint; missing, unreadable or incompatible files give a :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train first (`metavae train CONFIG --out DIR`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: not a readable metavae checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise CheckpointError(
            f"{path}: incompatible checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'}, "
            f"this metavae {__version__} reads format {FORMAT}); retrain with this version"
        )
    return payload
