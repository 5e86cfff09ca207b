"""Values as Redis clients return them: bytes, or str from a decoding client."""

from __future__ import annotations


def text(value: object) -> str:
    """``value`` as text: bytes decoded as UTF-8, anything else through ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
