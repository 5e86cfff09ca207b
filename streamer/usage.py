"""The commands' one error for a bad flag value."""

from __future__ import annotations


class UsageError(ValueError):
    """A bad flag value: the command line prints it and exits with code 2."""
