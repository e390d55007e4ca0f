"""Event times for timeline tests: ``HH:MM`` on 2026-05-01 (UTC) as epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DAY = datetime(2026, 5, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_WATERMARK = -(2**62)
EVERYTHING = 2**62


def at(clock: str) -> int:
    """``"10:05"`` or ``"10:04:59.999"`` on the test day, in epoch ms."""
    hours, minutes, *seconds = clock.split(":")
    moment = DAY + timedelta(
        hours=int(hours), minutes=int(minutes), seconds=float(seconds[0]) if seconds else 0
    )
    return (moment - EPOCH) // timedelta(milliseconds=1)
