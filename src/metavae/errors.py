"""Errors that the command line reports as one clear line (no traceback)."""


class MetaVAEError(Exception):
    """Base class for user-facing errors: the message names the problem and how to fix it."""


class ConfigError(MetaVAEError, ValueError):
    """A bad configuration key or value."""


class DataError(MetaVAEError):
    """A missing, truncated or corrupted data file."""


class CheckpointError(MetaVAEError):
    """A missing or incompatible checkpoint."""
