"""Bounds of query-time computation (filters, aggregates, on-demand sessions).

Past one of them a request is refused with the limit named (HTTP 422), so no query can turn into
an unbounded scan of Redis. Definitions (``query_features``) are checked against them too.
"""

from __future__ import annotations

from datetime import timedelta

__all__ = ["MAX_SIGNALS_MERGED", "MAX_WINDOW", "MAX_WINDOW_EVENTS"]

MAX_WINDOW = timedelta(days=7)
"""Longest ``within`` an aggregate or a sessionization may cover."""
MAX_WINDOW_EVENTS = 10_000
"""Most events (per signal) an aggregate or a sessionization may read."""
MAX_SIGNALS_MERGED = 8
"""Most signals one aggregate or sessionization may merge."""
