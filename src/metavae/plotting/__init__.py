"""Figures drawn from saved result files (never from live models)."""

__all__ = []

