"""The current members of each segment on Redis, for paged listings.

A user's membership *history* lives in the versioned store like any signal (one record per
change, view ``segment_<name>``). This index answers the other question, "who is in the segment
now?", without scanning users: per segment a sorted set of user ids scored by entry time and a
hash of their expiry times, both under one hash tag so a listing is one single-slot script call
on Redis Cluster too. The segment job keeps it in step with the changes it publishes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis

from usp_feast.connections import redis_problem
from usp_feast.store import RedisClient, StoreUnavailableError, now_micros

__all__ = [
    "MAX_PAGE",
    "CursorError",
    "Member",
    "MembersIndex",
    "MembersPage",
    "members_keys",
]

MAX_PAGE = 1000


class CursorError(ValueError):
    """A members cursor that this index did not hand out."""


def members_keys(prefix: str, project: str, segment: str) -> tuple[str, str]:
    """The (members sorted set, expiry hash) keys of one segment.

    Example:
        >>> members_keys("usp", "demo", "active_trip_planner")[0]
        'usp:demo:segment:{active_trip_planner}:members'

    """
    base = f"{prefix}:{project}:segment:{{{segment}}}"
    return f"{base}:members", f"{base}:expires"


@dataclass(frozen=True)
class Member:
    """One current member: the user and the current membership's entry and expiry (ms)."""

    user_id: str
    entered_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class MembersPage:
    """A page of members, newest entry first; ``next_cursor`` is None on the last page."""

    members: list[Member]
    next_cursor: str | None


def _encode_cursor(score: str, member: str) -> str:
    return base64.urlsafe_b64encode(f"{score}\n{member}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, member = text.split("\n", 1)
        float(score)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(
            f"cursor {cursor!r} is not one this API returned; start again without a cursor"
        ) from None
    return score, member


class MembersIndex:
    """Who is in each segment now: updated from membership changes, listed in pages.

    Example:
        >>> from usp_feast.store import connect
        >>> index = MembersIndex(connect(redis_url), project="doc")
        >>> index.apply("trip", [{"user_id": "7", "in_segment": True,
        ...                       "entered_at": 1000, "expires_at": 5000}])
        >>> index.page("trip", now_ms=2000).members[0].user_id
        '7'
        >>> index.drop("trip")
        2

    """

    def __init__(self, client: RedisClient, project: str, prefix: str = "usp") -> None:
        self.client = client
        self.project = project
        self.prefix = prefix
        source = resources.files("usp_feast").joinpath("members.lua").read_text()
        self._page_script = cast(Any, client).register_script(source)

    def apply(self, segment: str, changes: Iterable[Mapping[str, Any]]) -> None:
        """Apply membership changes in order (``user_id``, ``in_segment``, times in ms).

        Re-applying the same changes leaves the same index (replays after a restart).
        """
        members, expiries = members_keys(self.prefix, self.project, segment)
        with self.client.pipeline(transaction=False) as pipe:
            for change in changes:
                user = str(change["user_id"])
                if change["in_segment"]:
                    pipe.zadd(members, {user: int(change["entered_at"])})
                    pipe.hset(expiries, user, str(int(change["expires_at"])))
                else:
                    pipe.zrem(members, user)
                    pipe.hdel(expiries, user)
            self._call(pipe.execute)

    def page(
        self,
        segment: str,
        *,
        cursor: str | None = None,
        limit: int = 100,
        now_ms: int | None = None,
    ) -> MembersPage:
        """Current members, newest entry first, ``limit`` at most (a page may hold fewer).

        Args:
            segment: Segment name.
            cursor: ``next_cursor`` of the previous page; None for the first page.
            limit: Page size, 1 to :data:`MAX_PAGE`.
            now_ms: Read time; members whose expiry has passed are left out.

        Raises:
            CursorError: For a cursor this index did not hand out.

        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        score, member = _decode_cursor(cursor) if cursor else ("", "")
        now = now_micros() // 1000 if now_ms is None else now_ms
        keys = list(members_keys(self.prefix, self.project, segment))
        reply = self._call(self._page_script, keys=keys, args=[limit, now, score, member])
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        found = [
            Member(text[i], int(float(text[i + 1])), int(text[i + 2]))
            for i in range(2, len(text), 3)
        ]
        next_cursor = _encode_cursor(text[0], text[1]) if text[0] else None
        return MembersPage(found, next_cursor)

    def count(self, segment: str) -> int:
        """Members in the index, including expired ones the job has not removed yet."""
        return int(
            self._call(self.client.zcard, members_keys(self.prefix, self.project, segment)[0])
        )

    def drop(self, segment: str) -> int:
        """Delete a segment's index (segment removed from the repository)."""
        return int(
            self._call(self.client.unlink, *members_keys(self.prefix, self.project, segment))
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            reason = redis_problem(exc) or f"Redis is not reachable ({exc})"
            raise StoreUnavailableError(reason) from exc
