"""Durations as users write them in YAML and query strings: ``500ms``, ``30s``, ``10m``, ``14d``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DurationError", "format_duration", "parse_duration"]

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


class DurationError(ValueError):
    """A duration string that does not parse."""


def parse_duration(text: str) -> timedelta:
    """Parse a duration like ``10m`` or ``14d`` into a ``timedelta``.

    Args:
        text: A whole number followed by one unit: ms, s, m, h, d or w.

    Returns:
        The duration.

    Raises:
        DurationError: When the text is not a whole number followed by a known unit.

    Example:
        >>> parse_duration("10m")
        datetime.timedelta(seconds=600)

    """
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise DurationError(
            f"invalid duration {text!r}: use a whole number followed by one of "
            "ms, s, m, h, d, w (for example 10m or 14d)"
        )
    try:
        return int(match.group(1)) * _UNITS[match.group(2)]
    except OverflowError:
        # timedelta tops out near 2.7 million years; without this a typo escapes as a crash.
        raise DurationError(f"duration {text!r} is too long") from None


def format_duration(value: timedelta) -> str:
    """Format a ``timedelta`` with the largest unit that divides it exactly.

    Example:
        >>> format_duration(timedelta(days=14))
        '2w'
        >>> format_duration(timedelta(days=30))
        '30d'

    """
    for unit in ("w", "d", "h", "m", "s", "ms"):
        size = _UNITS[unit]
        if value % size == timedelta(0):
            return f"{value // size}{unit}"
    return f"{round(value.total_seconds() * 1000)}ms"
