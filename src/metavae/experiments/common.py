"""What every experiment set shares: the data root, building a registered model within memory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from metavae.data.mnist import default_data_root
from metavae.data.task import Task
from metavae.errors import ConfigError, RunDirectoryError
from metavae.files import describe_os_error
from metavae.models import MODELS, LatentVariableModel

__all__ = ["resolve_data_root", "build_registered_model", "output_directory", "finished_record", "read_json", "environment", "source_commit"]


def resolve_data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$METAVAE_DATA``, else ``./data``."""
    return Path(data_dir) if data_dir is not None else default_data_root()


def source_commit() -> str:
    """``git describe --always --dirty`` of the checkout this package is imported from (an editable
    install), or ``"unknown"`` (an installed wheel, no git)."""
    package = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=package, capture_output=True, text=True,
                              timeout=10, check=False)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=package, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    ours = top.returncode == 0 and (Path(top.stdout.strip()) / "src" / "metavae").resolve() == package
    return done.stdout.strip() if ours and done.returncode == 0 and done.stdout.strip() else "unknown"


def environment(device: str) -> dict[str, Any]:
    """Where and with what a run ran, for its record: the device ``device`` (a ``train.device``
    setting) resolves to here, this library's version and commit, torch's version and intra-op
    threads, Python's version, the host's name and platform."""
    from metavae import __version__
    from metavae.training.devices import resolve_device

    return {"device": str(resolve_device(device, fallback=True)), "metavae": __version__, "commit": source_commit(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(), "host": platform.node(),
            "platform": platform.platform(terse=True)}


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def build_registered_model(name: str, config: Any, task: Task, seed: int) -> LatentVariableModel:
    """``MODELS[name].from_config(config, task.event_shape, task.num_decoders)``, initialised from ``seed``.

    The model is first laid out on the ``meta`` device (no memory) to count its parameters:
    sizes whose training state (parameters, gradients and Adam's two moments, float32) would
    not fit in this machine's memory are refused with a :class:`ConfigError` before allocating.
    """
    cls = MODELS[name]
    try:
        with torch.device("meta"):
            layout = cls.from_config(config, task.event_shape, task.num_decoders)
        count = sum(p.numel() for p in layout.parameters())
    except RuntimeError:  # even the layout overflows: a tensor of more than 2**63 bytes
        count = None
    have = _memory_bytes()
    if count is None or (have is not None and 4 * 4 * count > have):
        sizes = ", ".join(f"model.{f}={getattr(config, f)}" for f in getattr(config, "__dataclass_fields__", {})
                          if not isinstance(getattr(config, f), str))
        what = "more than 2**63 bytes" if count is None else f"{count:,} parameters ({16 * count / 2**30:.1f} GiB to train)"
        raise ConfigError(f"model '{name}' with {sizes} needs {what}, more than this machine's "
                          f"{(have or 0) / 2**30:.1f} GiB of memory; choose smaller sizes")
    torch.manual_seed(seed)
    try:
        return cls.from_config(config, task.event_shape, task.num_decoders)
    except (RuntimeError, MemoryError) as exc:
        raise ConfigError(f"model '{name}' cannot be built with these sizes ({' '.join(str(exc).split())[:200]}); "
                          "choose smaller model sizes") from None


def output_directory(out: str | os.PathLike[str]) -> Path:
    """``out`` created if needed (the folder of an experiment's variant runs and its report)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {out}: {describe_os_error(exc)}; choose another --out") from None
    return out


def read_json(path: Path) -> Any:
    """The content of the JSON file ``path``, or ``None`` if it is absent, unreadable or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def finished_record(path: Path, config: Any) -> dict[str, Any] | None:
    """The JSON record a variant wrote at ``path`` when it finished, if it finished with ``config``
    (its ``"config"`` entry); ``None`` if it is absent, damaged (the variant is finished again: its
    run resumes) or from other settings."""
    record = read_json(path)
    return record if isinstance(record, dict) and record.get("config") == config else None
