"""Writing files so that a crash, a full disk or a kill never leaves a half-written file behind.

:func:`atomic_write` writes into a temporary file in the target's folder, flushes it to disk and
renames it over the target (``os.replace`` is atomic on POSIX): readers see the old file or the
new one, never a mixture. On failure the temporary file is removed and the error is reported
as one line naming the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from metavae.errors import MetaVAEError, RunDirectoryError

__all__ = ["describe_os_error", "atomic_write", "atomic_write_text", "atomic_write_json"]


def describe_os_error(exc: BaseException) -> str:
    """``"No space left on device"`` rather than ``"[Errno 28] No space left on device: '/x'"``."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], error: type[MetaVAEError] = RunDirectoryError,
                 hint: str = "free some space or fix the folder's permissions, then run the command again") -> None:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file that then replaces ``path``.

    Raises ``error`` (one line naming ``path`` and ``hint``) if anything fails; the temporary
    file is removed and an existing ``path`` is left exactly as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise error(f"cannot write {path}: {describe_os_error(exc)}; {hint}") from exc


def atomic_write_text(path: Path, text: str, **kwargs: Any) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), **kwargs)


def atomic_write_json(path: Path, obj: Any, **kwargs: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n", **kwargs)
