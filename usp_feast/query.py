"""The query API over signal history: ``SignalClient``.

It reads the versioned store directly (no Feast import on the hot path, so a process that only
serves queries starts in a fraction of a second) and knows each signal's retention from the
repository's definitions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml

from usp_feast import devstack
from usp_feast.aggregates import AggregateError, AggregateSpec, aggregate_all
from usp_feast.connections import ConnectionSettingsError
from usp_feast.definitions import load_definitions
from usp_feast.engagements import Engagement, served
from usp_feast.filters import Filter, FilterError, parse_filter
from usp_feast.limits import MAX_SIGNALS_MERGED, MAX_WINDOW, MAX_WINDOW_EVENTS
from usp_feast.membership import CursorError, MembersIndex, MembersPage
from usp_feast.segments import is_member, iso_ms
from usp_feast.sessions import Session, SessionEvent, SessionSpec, sessionize
from usp_feast.spec import SegmentSpec, SessionEngagementSpec, SignalDefinition
from usp_feast.store import (
    AsyncRecentReader,
    ScanLimitError,
    VersionedStore,
    connect,
    now_micros,
)
from usp_feast.versions import Record, duration_micros, from_micros, iso_micros, to_micros

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_SIGNALS_MERGED",
    "MAX_WINDOW",
    "MAX_WINDOW_EVENTS",
    "LimitExceededError",
    "Membership",
    "QueryError",
    "RepoSettings",
    "SessionReport",
    "SignalClient",
    "SignalEvent",
    "UnknownSegmentError",
    "UnknownSessionError",
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


class UnknownSegmentError(QueryError, LookupError):
    """The repository defines no segment of that name."""


class UnknownSessionError(QueryError, LookupError):
    """The repository defines no session engagement of that name."""


class LimitExceededError(QueryError):
    """A query past one of the documented bounds (window, events read, signals merged)."""


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
        versions: How many versions of the event the store holds (visible at ``as_of``):
            1 for an event written once; each replay or correction adds one.

    """

    signal: str
    user_id: str
    event_id: str
    event_time: datetime
    processed_at: datetime
    fields: dict[str, Any]
    versions: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ISO-8601 UTC timestamps, the version count, fields inline."""
        return record_dict(
            Record(
                self.event_id, to_micros(self.event_time), to_micros(self.processed_at), self.fields
            ),
            versions=self.versions,
        )


@dataclass(frozen=True)
class Membership:
    """A user's membership of one segment as known at a time (now, or ``at``).

    Attributes:
        segment: Segment name.
        user_id: The user, as stored (text).
        in_segment: Member at that time (an expiry that has passed counts, timer or not).
        entered_at: Start of the membership (the newest one, when no longer a member).
        expires_at: When it ends (or ended).
        change: The last change before that time: entered, renewed, exited or expired.
        reason: Why that change happened.
        changed_at: Event time of that change.

    """

    segment: str
    user_id: str
    in_segment: bool
    entered_at: datetime
    expires_at: datetime
    change: str
    reason: str
    changed_at: datetime

    @classmethod
    def from_record(cls, segment: str, user_id: str, record: Record, at_ms: int) -> Membership:
        """The membership a stored change record gives at ``at_ms``."""
        fields = record.fields
        return cls(
            segment=segment,
            user_id=user_id,
            in_segment=is_member(bool(fields.get("in_segment")), fields.get("expires_at"), at_ms),
            entered_at=from_micros(int(fields["entered_at"]) * 1000),
            expires_at=from_micros(int(fields["expires_at"]) * 1000),
            change=str(fields.get("change")),
            reason=str(fields.get("reason")),
            changed_at=from_micros(record.event_ts),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO-8601 UTC times)."""
        return {
            "segment": self.segment,
            "in_segment": self.in_segment,
            "entered_at": iso_ms(to_micros(self.entered_at) // 1000),
            "expires_at": iso_ms(to_micros(self.expires_at) // 1000),
            "change": self.change,
            "reason": self.reason,
            "changed_at": iso_ms(to_micros(self.changed_at) // 1000),
        }


@dataclass(frozen=True)
class SessionReport:
    """A user's session engagement: the current session or window, and recent closed ones.

    Attributes:
        session: Definition name.
        kind: ``session`` (session windows) or ``window`` (sliding windows).
        user_id: The user, as stored (text).
        current: What is open now (expiry honoured), or None.
        recent: Closed sessions or windows, newest first.

    """

    session: str
    kind: str
    user_id: str
    current: Engagement | None
    recent: tuple[Engagement, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO-8601 UTC times)."""
        return {
            "session": self.session,
            "kind": self.kind,
            "current": None if self.current is None else self.current.to_dict(),
            "recent": [e.to_dict() for e in self.recent],
        }


def record_dict(
    record: Record, keep: frozenset[str] | None = None, versions: int | None = None
) -> dict[str, Any]:
    """The JSON-ready form of a stored record (what the HTTP API returns per event).

    ``keep`` limits the fields returned (``event_id`` and the times always come); ``versions``,
    when given, is the event's version count.
    """
    body: dict[str, Any] = {
        "event_id": record.event_id,
        "event_ts": iso_micros(record.event_ts),
        "processed_at": iso_micros(record.version),
    }
    if versions is not None:
        body["versions"] = versions
    for key, value in record.fields.items():
        if key not in _ROW_KEYS and (keep is None or key in keep):
            body[key] = value
    return body


_ROW_KEYS = frozenset(("event_id", "user_id"))
_Spec = TypeVar("_Spec", SegmentSpec, SessionEngagementSpec)


def _named(specs: Mapping[str, _Spec], name: str, kind: str, unknown: type[QueryError]) -> _Spec:
    """The definition called ``name``, or ``unknown`` naming the known ones."""
    try:
        return specs[name]
    except KeyError:
        known = ", ".join(sorted(specs)) or "none"
        raise unknown(f"unknown {kind} {name!r}; known {kind}s: {known}") from None


def _closed_engagement(record: Record, spec: SessionEngagementSpec) -> Engagement:
    """A closed session or window as its history record (``Engagement.to_row``) holds it."""
    fields = record.fields
    return Engagement(
        started_ms=int(fields["started_at"]),
        last_event_ms=fields.get("last_event_at"),
        expires_ms=int(fields["expires_at"]),
        values={name: fields.get(name) for name in spec.features},
        closed=True,
    )


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
        signals: Iterable[SignalDefinition],
        async_reader: AsyncRecentReader | None = None,
        segments: Iterable[SegmentSpec] = (),
        sessions: Iterable[SessionEngagementSpec] = (),
    ) -> None:
        self.store = store
        self.async_reader = async_reader
        self._signals = {spec.name: spec for spec in signals}
        self._segments = {spec.name: spec for spec in segments}
        self._sessions = {spec.name: spec for spec in sessions}
        self.members_index = MembersIndex(store.client, project=store.project, prefix=store.prefix)

    @classmethod
    def from_repo(cls, path: Path | str) -> SignalClient:
        """Build a client from a feature repository's ``feature_store.yaml`` and definitions."""
        repo = Path(path).resolve()
        settings = RepoSettings.read(repo)
        cluster = settings.redis_type == "redis_cluster"
        try:
            client = connect(settings.connection_string, cluster=cluster)
            reader = AsyncRecentReader(
                settings.connection_string,
                project=settings.project,
                prefix=settings.key_prefix,
                cluster=cluster,
            )
        except ConnectionSettingsError as exc:  # a USP_REDIS_* variable that cannot work
            raise QueryError(str(exc)) from None
        store = VersionedStore(client, project=settings.project, prefix=settings.key_prefix)
        definitions = load_definitions(repo, check_imports=False)
        return cls(store, definitions.signals, reader, definitions.segments, definitions.sessions)

    @property
    def signals(self) -> list[str]:
        """Names of the signals this client can query."""
        return sorted(self._signals)

    @property
    def segment_names(self) -> list[str]:
        """Names of the segments this client can query."""
        return sorted(self._segments)

    @property
    def session_names(self) -> list[str]:
        """Names of the session engagements this client can query."""
        return sorted(self._sessions)

    def session_spec(self, name: str) -> SessionEngagementSpec:
        """The definition of a session engagement.

        Raises:
            UnknownSessionError: Naming the known ones.

        """
        return _named(self._sessions, name, "session", UnknownSessionError)

    def session(self, user_id: int | str, name: str, recent: int = 5) -> SessionReport:
        """A user's current session (or window) of ``name`` and the ``recent`` closed ones.

        The current one is what ``get_online_features`` serves: a session past its gap (or a
        window past its end) is not current, even before the job's timer closed it.

        Example: ``client.session(42, "browse_session").current.values["top_cities"]``
        → ``[["Lisbon", 3], ["Porto", 1]]``.

        Raises:
            UnknownSessionError: The session engagement is not defined.
            QueryError: ``recent`` outside 0..100.

        """
        spec = self.session_spec(name)
        if not 0 <= recent <= 100:
            raise QueryError(f"recent must be between 0 and 100, got {recent}")
        user = str(user_id)
        [document] = self.store.current(spec.view, [user])
        current = served(document, now_micros() // 1000)
        closed = self.store.recent(spec.view, user, limit=recent)
        return SessionReport(
            session=name,
            kind=spec.kind,
            user_id=user,
            current=current,
            recent=tuple(_closed_engagement(record, spec) for record in closed),
        )

    def segment_spec(self, segment: str) -> SegmentSpec:
        """The definition of a segment.

        Raises:
            UnknownSegmentError: Naming the known segments.

        """
        return _named(self._segments, segment, "segment", UnknownSegmentError)

    def membership(
        self, user_id: int | str, segment: str, at: datetime | None = None
    ) -> Membership | None:
        """A user's membership of ``segment`` at ``at`` (default now); None if never a member.

        With ``at``, the answer comes from the membership history (point in time): the newest
        change at or before ``at``, with its expiry checked against ``at``.

        Raises:
            UnknownSegmentError: The segment is not defined.
            QueryError: ``at`` has no timezone.

        """
        view = self.segment_spec(segment).view
        user = str(user_id)
        if at is None:
            record = self.store.latest(view, [user])[0]
            at_ms = now_micros() // 1000
        else:
            at_us = _aware_micros(at, "at")
            found = self.store.recent(view, user, until=at_us, limit=1)
            record, at_ms = (found[0] if found else None), at_us // 1000
        return None if record is None else Membership.from_record(segment, user, record, at_ms)

    def in_segment(self, user_id: int | str, segment: str, at: datetime | None = None) -> bool:
        """True when the user is a member of ``segment`` now (or at ``at``, from history).

        Example: ``client.in_segment(42, "active_trip_planner")`` → ``True``.
        """
        found = self.membership(user_id, segment, at)
        return found is not None and found.in_segment

    def segments(self, user_id: int | str, at: datetime | None = None) -> list[Membership]:
        """The segments the user is a member of now (or at ``at``), by segment name."""
        found = [self.membership(user_id, name, at) for name in self.segment_names]
        return [m for m in found if m is not None and m.in_segment]

    def members(
        self, segment: str, cursor: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> MembersPage:
        """A page of the segment's current members, newest entry first.

        Pass the page's ``next_cursor`` to get the next one; a page may hold fewer than
        ``limit`` members (expired members are skipped) and the listing ends when
        ``next_cursor`` is None. Each page costs Redis O(log N + limit), whatever N.

        Raises:
            UnknownSegmentError: The segment is not defined.
            QueryError: A cursor this API did not hand out, or ``limit`` outside 1..1000.

        """
        self.segment_spec(segment)
        if not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        try:
            return self.members_index.page(segment, cursor=cursor, limit=limit)
        except CursorError as exc:
            raise QueryError(str(exc)) from None

    def spec(self, signal: str) -> SignalDefinition:
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
        *,
        where: str | Filter | None = None,
        fields: Sequence[str] | None = None,
        order: str = "newest",
    ) -> list[SignalEvent]:
        """A user's events of one signal, newest first, one entry per event id.

        Replays and corrections add versions; each event appears once, at its newest version
        known at ``as_of`` (default: now), with the number of its versions known then
        (``SignalEvent.versions``). One Redis round trip, filter included: a filtered page
        still holds ``limit`` events when that many match.

        Args:
            user_id: The user.
            signal: Signal name.
            within: Only events whose event time is within this long before the reference
                time (``as_of``, or now). Default: the signal's retention.
            limit: Maximum events returned (default 50, at most ``MAX_LIMIT``).
            as_of: Timezone-aware processing time: return what was known then.
            where: A filter on the signal's fields, e.g. ``'city == "Paris" and guests >= 2'``
                (see :mod:`usp_feast.filters`), evaluated inside Redis.
            fields: Return only these fields (``event_id`` and the times always come).
            order: ``"newest"`` (default) or ``"oldest"`` events of the window first.

        Raises:
            UnknownSignalError: The signal is not defined.
            QueryError: A parameter is out of range, or the filter or projection does not fit
                the signal's schema (the message names the field and why).
            LimitExceededError: The read hit ``store.MAX_SCAN`` before the page filled.

        """
        keep = self._projection(self.spec(signal), fields)
        bounds = self._bounds(signal, within, limit, as_of, where, order)
        try:
            counted = self.store.recent_with_versions(signal, str(user_id), **bounds)
        except ScanLimitError as exc:
            raise LimitExceededError(str(exc)) from None
        return [self._event(signal, str(user_id), r, keep, n) for r, n in counted]

    def records(
        self,
        user_id: int | str,
        signal: str,
        within: timedelta | None = None,
        limit: int | None = None,
        as_of: datetime | None = None,
        *,
        where: str | Filter | None = None,
        order: str = "newest",
    ) -> list[Record]:
        """The stored records behind :meth:`recent` (same parameters and checks)."""
        bounds = self._bounds(signal, within, limit, as_of, where, order)
        try:
            return self.store.recent(signal, str(user_id), **bounds)
        except ScanLimitError as exc:
            raise LimitExceededError(str(exc)) from None

    async def recent_dicts_async(
        self,
        user_id: int | str,
        signal: str,
        within: timedelta | None = None,
        limit: int | None = None,
        as_of: datetime | None = None,
        *,
        where: str | Filter | None = None,
        fields: Sequence[str] | None = None,
        order: str = "newest",
    ) -> list[dict[str, Any]]:
        """Like :meth:`recent`, as JSON-ready dicts, on an asyncio Redis client (the HTTP API)."""
        keep = self._projection(self.spec(signal), fields)
        bounds = self._bounds(signal, within, limit, as_of, where, order)
        try:
            if self.async_reader is None:
                counted = self.store.recent_with_versions(signal, str(user_id), **bounds)
            else:
                counted = await self.async_reader.recent_with_versions(
                    signal, str(user_id), **bounds
                )
        except ScanLimitError as exc:
            raise LimitExceededError(str(exc)) from None
        return [record_dict(r, keep, n) for r, n in counted]

    def aggregate(
        self,
        user_id: int | str,
        signals: str | Sequence[str],
        aggregates: Sequence[str | AggregateSpec],
        within: timedelta,
        *,
        where: str | Filter | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any]:
        """Aggregate a user's events of one or several signals over a window, at query time.

        Example: ``client.aggregate(42, "search", ["count", "count_distinct:city"],
        within=timedelta(hours=1))`` → ``{"count": 7, "count_distinct_city": 3}``.

        Args:
            user_id: The user.
            signals: One signal name, or several whose events are merged.
            aggregates: ``count``, ``count_distinct:F``, ``top_k:F:K``, ``min:F``, ``max:F``,
                ``avg:F``, ``sum:F`` (see :mod:`usp_feast.aggregates`), as text or specs.
            within: The window before now (or ``as_of``); at most ``MAX_WINDOW``.
            where: A filter applied to every signal's events (its fields must exist in each).
            as_of: Timezone-aware processing time: aggregate what was known then.

        Raises:
            QueryError: An aggregate or filter does not fit every signal's schema.
            LimitExceededError: Past ``MAX_WINDOW``, ``MAX_WINDOW_EVENTS`` per signal or
                ``MAX_SIGNALS_MERGED``.

        """
        names = self._signal_list(signals)
        try:
            specs = [
                a if isinstance(a, AggregateSpec) else AggregateSpec.parse(a) for a in aggregates
            ]
            if not specs:
                raise AggregateError("name at least one aggregate, e.g. count")
            for name in names:
                for spec in specs:
                    spec.check(_field_types(self.spec(name)))
        except AggregateError as exc:
            raise QueryError(str(exc)) from None
        rows = [
            {**r.fields, "event_ts": from_micros(r.event_ts)}  # for last_k, first_ts, duration
            for _, r in self._window(user_id, names, within, as_of, where)
        ]
        try:
            return aggregate_all(specs, rows)
        except AggregateError as exc:
            raise QueryError(str(exc)) from None

    def sessions(
        self,
        user_id: int | str,
        signals: str | Sequence[str],
        gap: timedelta,
        within: timedelta = timedelta(hours=24),
        *,
        max_length: timedelta | None = None,
        as_of: datetime | None = None,
    ) -> list[Session]:
        """A user's recent activity cut into sessions by an inactivity gap, newest first.

        Events of all ``signals`` are merged by event time; two events ``gap`` or more apart
        are in different sessions (the rules of :mod:`usp_feast.sessions`, shared with the
        streaming session jobs). A session cut by the window's start is reported from its
        first event inside the window.

        Raises:
            QueryError: A bad gap or max_length.
            LimitExceededError: Past ``MAX_WINDOW``, ``MAX_WINDOW_EVENTS`` per signal or
                ``MAX_SIGNALS_MERGED``.

        """
        names = self._signal_list(signals)
        try:
            spec = SessionSpec(gap=gap, max_length=max_length)
        except ValueError as exc:
            raise QueryError(str(exc)) from None
        events = [
            SessionEvent(from_micros(r.event_ts), name, r.event_id, r.fields)
            for name, r in self._window(user_id, names, within, as_of, None)
        ]
        return sessionize(events, spec)

    def _signal_list(self, signals: str | Sequence[str]) -> list[str]:
        names = [signals] if isinstance(signals, str) else list(dict.fromkeys(signals))
        if not names:
            raise QueryError("name at least one signal")
        if len(names) > MAX_SIGNALS_MERGED:
            raise LimitExceededError(
                f"{len(names)} signals requested; at most {MAX_SIGNALS_MERGED} "
                "(MAX_SIGNALS_MERGED) can be merged in one query"
            )
        for name in names:
            self.spec(name)
        return names

    def _window(
        self,
        user_id: int | str,
        names: Sequence[str],
        within: timedelta,
        as_of: datetime | None,
        where: str | Filter | None,
    ) -> list[tuple[str, Record]]:
        """Every event of the window per signal, bounded by ``MAX_WINDOW_EVENTS`` each."""
        if not isinstance(within, timedelta) or within > MAX_WINDOW:
            raise LimitExceededError(
                f"within={within} is longer than the {MAX_WINDOW.days}-day maximum (MAX_WINDOW) "
                "of query-time computation"
            )
        out: list[tuple[str, Record]] = []
        for name in names:
            bounds = self._bounds(name, within, 1, as_of, where, "newest")
            # One more than the bound: if it comes back, the window holds too many events.
            bounds["limit"] = MAX_WINDOW_EVENTS + 1
            try:
                records = self.store.recent(name, str(user_id), **bounds)
            except ScanLimitError as exc:
                raise LimitExceededError(str(exc)) from None
            if len(records) > MAX_WINDOW_EVENTS:
                raise LimitExceededError(
                    f"the {within} window holds more than {MAX_WINDOW_EVENTS:,} {name} events "
                    "(MAX_WINDOW_EVENTS); narrow `within`"
                )
            out += [(name, r) for r in records]
        return out

    @staticmethod
    def _projection(spec: SignalDefinition, fields: Sequence[str] | None) -> frozenset[str] | None:
        if fields is None:
            return None
        if isinstance(fields, str):
            fields = [f for f in fields.split(",") if f]
        unknown = [f for f in fields if f not in spec.fields and f != "event_id"]
        if unknown:
            known = ", ".join(sorted(spec.fields))
            raise QueryError(f"unknown field {unknown[0]!r} in fields; {spec.name} has: {known}")
        return frozenset(fields)

    def _bounds(
        self,
        signal: str,
        within: timedelta | None,
        limit: int | None,
        as_of: datetime | None,
        where: str | Filter | None = None,
        order: str = "newest",
    ) -> dict[str, Any]:
        spec = self.spec(signal)
        limit = DEFAULT_LIMIT if limit is None else limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
        if within is not None and within <= timedelta(0):
            raise QueryError(f"within must be a positive duration, got {within}")
        if as_of is not None:
            _aware_micros(as_of, "as_of")
        if order not in ("newest", "oldest"):
            raise QueryError(f"order must be 'newest' or 'oldest', got {order!r}")
        try:
            where = parse_filter(where) if isinstance(where, str) else where
            if where is not None:
                where.check(_field_types(spec))
        except FilterError as exc:
            raise QueryError(str(exc)) from None
        now = now_micros()
        reference = now if as_of is None else to_micros(as_of)
        oldest = now - duration_micros(spec.retention)
        if within is not None:
            oldest = max(oldest, reference - duration_micros(within))
        return {
            "since": oldest,
            "limit": limit,
            "as_of": None if as_of is None else reference,
            "where": where,
            "oldest_first": order == "oldest",
        }

    def ping(self) -> bool:
        """True when the store answers."""
        return self.store.ping()

    @staticmethod
    def _event(
        signal: str,
        user_id: str,
        record: Record,
        keep: frozenset[str] | None = None,
        versions: int = 1,
    ) -> SignalEvent:
        fields = record.fields
        if keep is not None:
            fields = {k: v for k, v in fields.items() if k in keep or k == "event_id"}
        return SignalEvent(
            signal=signal,
            user_id=user_id,
            event_id=record.event_id,
            event_time=from_micros(record.event_ts),
            processed_at=from_micros(record.version),
            fields=fields,
            versions=versions,
        )


def _field_types(spec: SignalDefinition) -> dict[str, str]:
    """A signal's filterable fields and their types (``event_id`` included)."""
    return {"event_id": "string", **spec.fields}


def _aware_micros(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise QueryError(f"{name} must be timezone-aware (UTC), got a naive datetime")
    return to_micros(moment)
