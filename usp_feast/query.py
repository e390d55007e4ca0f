"""The query API over signal history: ``SignalClient``.

It reads the versioned store directly (no Feast import on the hot path, so a process that only
serves queries starts in a fraction of a second) and knows each signal's retention from the
repository's definitions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from usp_feast import devstack
from usp_feast.definitions import load_definitions
from usp_feast.spec import SignalSpec
from usp_feast.store import AsyncRecentReader, VersionedStore, connect, now_micros
from usp_feast.versions import Record, duration_micros, from_micros, iso_micros, to_micros

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "QueryError",
    "RepoSettings",
    "SignalClient",
    "SignalEvent",
    "UnknownSignalError",
    "record_dict",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
PLUGIN_TYPE = "usp_feast.online_store.VersionedRedisOnlineStore"


class QueryError(ValueError):
    """A query parameter that cannot be honoured; the message says which and why."""


class UnknownSignalError(QueryError, LookupError):
    """The repository defines no signal of that name."""


@dataclass(frozen=True)
class SignalEvent:
    """One event of a user's signal, at the newest version visible to the query.

    Attributes:
        signal: Signal name.
        user_id: The user, as stored (text).
        event_id: Event identity (versions of one event share it).
        event_time: When the event happened (UTC).
        processed_at: When this version was written (UTC); ``as_of`` filters on it.
        fields: The signal's values.

    """

    signal: str
    user_id: str
    event_id: str
    event_time: datetime
    processed_at: datetime
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ISO-8601 UTC timestamps, fields inline."""
        return record_dict(
            Record(
                self.event_id, to_micros(self.event_time), to_micros(self.processed_at), self.fields
            )
        )


def record_dict(record: Record) -> dict[str, Any]:
    """The JSON-ready form of a stored record (what the HTTP API returns per event)."""
    body = {
        "event_id": record.event_id,
        "event_ts": iso_micros(record.event_ts),
        "processed_at": iso_micros(record.version),
    }
    for key, value in record.fields.items():
        if key not in _ROW_KEYS:
            body[key] = value
    return body


_ROW_KEYS = frozenset(("event_id", "user_id"))


@dataclass(frozen=True)
class RepoSettings:
    """What a query process needs from ``feature_store.yaml``."""

    project: str
    connection_string: str
    redis_type: str
    key_prefix: str

    @classmethod
    def read(cls, repo: Path) -> RepoSettings:
        """Read a repository's settings the way Feast does (``${VAR}`` expanded)."""
        path = repo / "feature_store.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: point at a Feast feature repository")
        config = yaml.safe_load(os.path.expandvars(path.read_text())) or {}
        online = config.get("online_store") or {}
        if online.get("type") != PLUGIN_TYPE:
            raise QueryError(
                f"{path}: online_store.type must be {PLUGIN_TYPE} for the history API, "
                f"got {online.get('type')!r}"
            )
        return cls(
            project=str(config["project"]),
            connection_string=online.get("connection_string") or devstack.endpoints().redis,
            redis_type=online.get("redis_type", "redis"),
            key_prefix=online.get("key_prefix", "usp"),
        )


class SignalClient:
    """Read users' recent signals from the versioned store.

    Example:
        >>> client = SignalClient.from_repo(repo_path)
        >>> events = client.recent(42, "search", within=timedelta(minutes=10), limit=5)
        >>> all(e.signal == "search" for e in events)
        True

    """

    def __init__(
        self,
        store: VersionedStore,
        signals: Iterable[SignalSpec],
        async_reader: AsyncRecentReader | None = None,
    ) -> None:
        self.store = store
        self.async_reader = async_reader
        self._signals = {spec.name: spec for spec in signals}

    @classmethod
    def from_repo(cls, path: Path | str) -> SignalClient:
        """Build a client from a feature repository's ``feature_store.yaml`` and definitions."""
        repo = Path(path).resolve()
        settings = RepoSettings.read(repo)
        cluster = settings.redis_type == "redis_cluster"
        client = connect(settings.connection_string, cluster=cluster)
        store = VersionedStore(client, project=settings.project, prefix=settings.key_prefix)
        reader = AsyncRecentReader(
            settings.connection_string,
            project=settings.project,
            prefix=settings.key_prefix,
            cluster=cluster,
        )
        return cls(store, load_definitions(repo, check_imports=False).signals, reader)

    @property
    def signals(self) -> list[str]:
        """Names of the signals this client can query."""
        return sorted(self._signals)

    def spec(self, signal: str) -> SignalSpec:
        """The definition of a signal.

        Raises:
            UnknownSignalError: Naming the known signals.

        """
        try:
            return self._signals[signal]
        except KeyError:
            known = ", ".join(self.signals) or "none"
            raise UnknownSignalError(f"unknown signal {signal!r}; known signals: {known}") from None

    def recent(
        self,
        user_id: int | str,
        signal: str,
        within: timedelta | None = None,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[SignalEvent]:
        """A user's events of one signal, newest first, one entry per event id.

        Replays and corrections add versions; each event appears once, at its newest version
        known at ``as_of`` (default: now). One Redis round trip.

        Args:
            user_id: The user.
            signal: Signal name.
            within: Only events whose event time is within this long before the reference
                time (``as_of``, or now). Default: the signal's retention.
            limit: Maximum events returned (default 50, at most ``MAX_LIMIT``).
            as_of: Timezone-aware processing time: return what was known then.

        Raises:
            UnknownSignalError: The signal is not defined.
            QueryError: A parameter is out of range.

        """
        return [
            self._event(signal, str(user_id), r)
            for r in self.records(user_id, signal, within, limit, as_of)
        ]

    def records(
        self,
        user_id: int | str,
        signal: str,
        within: timedelta | None = None,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[Record]:
        """The stored records behind :meth:`recent` (same parameters and checks)."""
        return self.store.recent(signal, str(user_id), **self._bounds(signal, within, limit, as_of))

    async def recent_dicts_async(
        self,
        user_id: int | str,
        signal: str,
        within: timedelta | None = None,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Like :meth:`recent`, as JSON-ready dicts, on an asyncio Redis client (the HTTP API)."""
        bounds = self._bounds(signal, within, limit, as_of)
        if self.async_reader is None:
            return [record_dict(r) for r in self.store.recent(signal, str(user_id), **bounds)]
        records = await self.async_reader.recent(signal, str(user_id), **bounds)
        return [record_dict(r) for r in records]

    def _bounds(
        self,
        signal: str,
        within: timedelta | None,
        limit: int | None,
        as_of: datetime | None,
    ) -> dict[str, Any]:
        spec = self.spec(signal)
        limit = DEFAULT_LIMIT if limit is None else limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        if within is not None and within <= timedelta(0):
            raise QueryError(f"within must be a positive duration, got {within}")
        if as_of is not None and as_of.tzinfo is None:
            raise QueryError("as_of must be timezone-aware (UTC), got a naive datetime")
        now = now_micros()
        reference = now if as_of is None else to_micros(as_of)
        oldest = now - duration_micros(spec.retention)
        if within is not None:
            oldest = max(oldest, reference - duration_micros(within))
        return {"since": oldest, "limit": limit, "as_of": None if as_of is None else reference}

    def ping(self) -> bool:
        """True when the store answers."""
        return self.store.ping()

    @staticmethod
    def _event(signal: str, user_id: str, record: Record) -> SignalEvent:
        return SignalEvent(
            signal=signal,
            user_id=user_id,
            event_id=record.event_id,
            event_time=from_micros(record.event_ts),
            processed_at=from_micros(record.version),
            fields=record.fields,
        )
