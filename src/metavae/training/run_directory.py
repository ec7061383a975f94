"""A run directory and the guarantees around it: nothing of an earlier run is ever lost.

Layout: ``run.json`` (marks a metavae run), ``config.yaml`` (the resolved config), ``metrics.jsonl``
(one JSON object per validation), ``train.log``, ``checkpoints/{last,best}.pt``, ``.lock``.

Policy:

- A fresh run starts only in a directory that does not exist or is empty. A directory holding an
  earlier run is refused unless the caller resumes it (``resume=True``) or replaces it
  (``overwrite=True``, which *moves* it aside to ``<name>.replaced-<time>``, never deletes it). A
  non-empty directory that is not a metavae run is always refused.
- All of this is decided by :meth:`RunDirectory.inspect` without writing anything, so a command that
  fails validation leaves the directory untouched.
- While a process trains, it holds an exclusive ``flock`` on ``.lock``; a second process is refused.
  The kernel releases the lock when its process dies, so the lock of a killed run is taken over by
  the next one (the dead process's pid, left in the file, is reported).
- ``config.yaml`` and ``run.json`` are written atomically; ``metrics.jsonl`` is append-only and is
  repaired on resume (a line cut off by a kill is dropped, records after the checkpoint are removed).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

from metavae import __version__
from metavae.config import RunConfig, save_config
from metavae.errors import ConfigError, RunDirectoryError
from metavae.files import atomic_write_json, atomic_write_text, describe_os_error

__all__ = ["MARKER", "LOCK", "RunDirectory"]


log = logging.getLogger(__name__)

MARKER = "run.json"
LOCK = ".lock"

State = Literal["new", "run"]


class RunDirectory:
    """The files of one training run under ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.last_checkpoint = self.checkpoints / "last.pt"
        self.best_checkpoint = self.checkpoints / "best.pt"
        self.config_path = self.path / "config.yaml"
        self.metrics_path = self.path / "metrics.jsonl"
        self.log_path = self.path / "train.log"
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ deciding, read-only
    def is_run(self) -> bool:
        """A metavae run: has ``run.json`` (or, from before it existed, a checkpoint)."""
        return (self.path / MARKER).is_file() or self.last_checkpoint.is_file() or self.best_checkpoint.is_file()

    def inspect(self, resume: bool = False, overwrite: bool = False) -> State:
        """``"new"`` (absent or empty: a fresh run may start) or ``"run"`` (an earlier run, which
        ``resume`` continues or ``overwrite`` moves aside). Refusals raise :class:`RunDirectoryError`;
        nothing is written."""
        if resume and overwrite:
            raise ConfigError("resume and overwrite exclude each other: --resume continues a run, --overwrite replaces it")
        p = self.path
        if not p.exists():
            blocker = next((q for q in p.parents if q.exists() and not q.is_dir()), None)
            if blocker is not None:
                raise RunDirectoryError(f"cannot create run directory {p}: {blocker} is a file; choose another --out")
            return "new"
        if not p.is_dir():
            raise RunDirectoryError(f"run directory {p} is a file, not a directory; choose another --out")
        try:
            entries = sorted(e.name for e in p.iterdir() if e.name != LOCK)
        except OSError as exc:
            raise RunDirectoryError(f"cannot read run directory {p}: {describe_os_error(exc)}; choose another --out") from None
        holder = self._holder()
        if holder is not None:
            raise RunDirectoryError(f"{p} is in use: a metavae process is training in it ({holder}); wait for it "
                                    "to finish or stop it, or choose another --out")
        if not entries:
            return "new"
        if not self.is_run():
            shown = ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
            raise RunDirectoryError(f"{p} is not a metavae run directory (it holds {shown}); metavae only writes into "
                                    "new or empty folders or its own runs: choose another --out")
        if self.checkpoints.exists() and not self.checkpoints.is_dir():
            raise RunDirectoryError(f"{self.checkpoints} is a file, not a directory: move it away, or choose another --out")
        if not (resume or overwrite):
            raise RunDirectoryError(f"{p} already holds a metavae run: continue it with --resume, or start over with "
                                    f"--overwrite (moves it aside to {p.name}.replaced-<time>)")
        return "run"

    def _holder(self) -> str | None:
        """Who holds the lock (its recorded ``pid … on host``), or ``None`` when nobody does.

        Checked before anything else so that a directory a process is still preparing (lock taken,
        ``run.json`` not yet written) reads as in use, not as a foreign folder."""
        try:
            fd = os.open(self.path / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ claiming, with the lock
    def claim(self, state: State, overwrite: bool = False) -> None:
        """Create (or take over) the directory and lock it for this process.

        ``state`` is what :meth:`inspect` returned. With ``overwrite`` an earlier run is moved
        aside first (under its own lock, so a run still training is never moved)."""
        if state == "run" and overwrite:
            self._lock()
            aside = self._aside_name()
            try:
                os.rename(self.path, aside)
            except OSError as exc:
                self.release()
                raise RunDirectoryError(f"cannot move {self.path} aside to {aside}: {describe_os_error(exc)}") from None
            self.release()
            log.warning("moved the earlier run in %s aside to %s", self.path, aside)
            state = "new"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirectoryError(f"cannot create run directory {self.path}: {describe_os_error(exc)}; "
                                    "choose another --out") from None
        self._lock()
        try:
            self.checkpoints.mkdir(exist_ok=True)
            if not (self.path / MARKER).is_file():
                atomic_write_json(self.path / MARKER, {"format": 1, "library_version": __version__,
                                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        except (OSError, RunDirectoryError) as exc:
            self.release()
            if isinstance(exc, RunDirectoryError):
                raise
            what = f"{self.checkpoints} is a file, not a directory" if self.checkpoints.exists() else describe_os_error(exc)
            raise RunDirectoryError(f"cannot prepare run directory {self.path}: {what}; choose another --out") from None

    def _aside_name(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.replaced-{stamp}")
        i = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.replaced-{stamp}-{i}")
            i += 1
        return target

    def _lock(self) -> None:
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot write into run directory {self.path}: {describe_os_error(exc)}; "
                                    "choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunDirectoryError(f"{self.path} is in use: a metavae process is training in it ({holder}); wait for it "
                                    "to finish or stop it, or choose another --out") from None
        stale = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        if stale:
            log.warning("%s: taking over the lock left by a process that is no longer running (%s)", self.path, stale)
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise RunDirectoryError(f"cannot write into run directory {self.path}: {describe_os_error(exc)}") from None
        self._lock_fd = fd

    def release(self) -> None:
        """Clear and release the lock (a clean exit leaves an empty ``.lock``)."""
        if self._lock_fd is None:
            return
        try:
            os.ftruncate(self._lock_fd, 0)
        except OSError:
            pass
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None

    # ------------------------------------------------------------------ files
    def write_config(self, config: RunConfig) -> None:
        save_config(config, self.config_path)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record as one line (a kill can at worst cut the last line; resume drops it)."""
        try:
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise RunDirectoryError(f"cannot write {self.metrics_path}: {describe_os_error(exc)}; free some space, "
                                    "then resume with --resume") from None

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl``; lines that do not parse (a write cut off by a kill) are skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        for n, line in enumerate(self.metrics_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is incomplete or damaged and is dropped", self.metrics_path, n)
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def truncate_metrics(self, step: int) -> None:
        """Keep the records up to ``step`` (those of the checkpoint being resumed), rewritten atomically."""
        if self.metrics_path.exists():
            kept = [r for r in self.read_metrics() if r["step"] <= step]
            atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
