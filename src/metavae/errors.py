"""Errors that the command line reports as one clear line (no traceback), exit code 2.

Every failure a user can cause — a bad config, a missing or damaged file, a run directory in
use, a diverged run — is a :class:`MetaVAEError` whose message names the problem (the key, the
value, the file) and how to fix it. Anything else reaching the command line is a bug in metavae
(exit code 1; the traceback is shown with ``--debug``).
"""

__all__ = ["MetaVAEError", "ConfigError", "DataError", "CheckpointError", "RunDirectoryError", "DivergenceError"]


class MetaVAEError(Exception):
    """Base class for user-facing errors: the message names the problem and how to fix it."""


class ConfigError(MetaVAEError, ValueError):
    """A bad configuration key or value."""


class DataError(MetaVAEError):
    """A missing, truncated, corrupted or unwritable data file or folder."""


class CheckpointError(MetaVAEError):
    """A missing, damaged or incompatible checkpoint."""


class RunDirectoryError(MetaVAEError):
    """A run directory that may not be used: an earlier run, not a run, in use, or not writable."""


class DivergenceError(MetaVAEError):
    """Training produced a non-finite (or absurdly large) loss, gradient, parameter or metric."""
