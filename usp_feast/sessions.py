"""Sessions of user activity: one pure core for query-time sessionizing and a streaming job.

A session is a run of a user's events with no silence of ``gap`` or more between consecutive
events. The rules follow Flink's event-time session windows:

* Each event opens the interval ``[t, t + gap)``; overlapping intervals merge. So an event
  strictly less than ``gap`` after the previous one joins its session, and two events exactly
  ``gap`` apart are in different sessions.
* A late (out-of-order) event that falls between two sessions and overlaps both merges them.
* With ``max_length``, a session never spans ``max_length`` or more from its first event: walking
  the events in event-time order, an event with ``t - start >= max_length`` starts a new session.
  The split is always computed on the event-time-sorted events of a merged group, never on
  arrival order, so the streaming path (:class:`SessionLogic`) and the query-time path
  (:func:`sessionize`) give the same sessions whatever order the events arrive in.
* An ``event_id`` names one event: replays of an id are counted once. Should the copies disagree,
  the copy with the earliest ``(event_time, signal)`` is kept, so the choice does not depend on
  arrival order either.
* Events sort by ``(event_time, event_id, signal)``; the ``event_id`` tie-break makes the order of
  simultaneous events deterministic.

All times are timezone-aware; sessions report them in UTC.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "EventRef",
    "Session",
    "SessionEvent",
    "SessionLogic",
    "SessionSpec",
    "SessionState",
    "sessionize",
    "starts_session",
]

_SNAPSHOT_VERSION = 1


def _require_aware(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a timezone-aware datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} {value.isoformat()} has no timezone; pass an aware datetime such as "
            "datetime(..., tzinfo=UTC)"
        )
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SessionSpec:
    """How events group into sessions.

    Args:
        gap: The silence that ends a session; events strictly closer than this share a session.
        max_length: Optional cap on a session's span; an event ``max_length`` or more after the
            session's first event starts a new session.

    Raises:
        ValueError: When ``gap`` or ``max_length`` is not a positive ``timedelta``.

    Example:
        >>> SessionSpec(gap=timedelta(minutes=30)).gap
        datetime.timedelta(seconds=1800)
        >>> SessionSpec(gap=timedelta(0))
        Traceback (most recent call last):
        ...
        ValueError: session gap must be longer than zero, got 0:00:00

    """

    gap: timedelta
    max_length: timedelta | None = None

    def __post_init__(self) -> None:
        for name, value in (("gap", self.gap), ("max_length", self.max_length)):
            if value is None and name == "max_length":
                continue
            if not isinstance(value, timedelta):
                raise ValueError(
                    f"session {name} must be a timedelta such as timedelta(minutes=30), "
                    f"got {value!r}"
                )
            if value <= timedelta(0):
                raise ValueError(f"session {name} must be longer than zero, got {value}")


@dataclass(frozen=True)
class SessionEvent:
    """One event offered to sessionizing.

    Args:
        event_time: When the event happened; must be timezone-aware.
        signal: The signal the event belongs to (``search``, ``view``, ...).
        event_id: The event's unique id; replays of the same id count once.
        fields: The event's fields; sessionizing does not read them.

    Raises:
        ValueError: When ``event_time`` is naive or not a datetime.

    Example:
        >>> event = SessionEvent(datetime(2026, 5, 1, 10, tzinfo=UTC), "view", "e1", {})
        >>> event.signal
        'view'

    """

    event_time: datetime
    signal: str
    event_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require_aware(self.event_time, f"event_time of event {self.event_id!r}")


@dataclass(frozen=True, order=True)
class EventRef:
    """What a session keeps of an event: its time (UTC), id and signal, ordered in that order."""

    event_time: datetime
    event_id: str
    signal: str

    @classmethod
    def of(cls, event: SessionEvent) -> EventRef:
        """The reference to ``event``, with its time converted to UTC."""
        return cls(event.event_time.astimezone(UTC), event.event_id, event.signal)


@dataclass(frozen=True)
class Session:
    """Summary of one session.

    Attributes:
        start: Time of the first event (UTC).
        end: Time of the last event (UTC).
        event_count: Number of distinct events.
        signal_counts: Number of events per signal name, keys sorted.
        event_ids: Event ids in event-time order.

    Example:
        >>> t = datetime(2026, 5, 1, 10, tzinfo=UTC)
        >>> [session] = sessionize(
        ...     [SessionEvent(t, "view", "a"), SessionEvent(t + timedelta(minutes=5), "book", "b")],
        ...     SessionSpec(gap=timedelta(minutes=30)))
        >>> session.to_dict()["duration_s"], session.signal_counts
        (300.0, {'book': 1, 'view': 1})

    """

    start: datetime
    end: datetime
    event_count: int
    signal_counts: dict[str, int]
    event_ids: tuple[str, ...]

    @property
    def duration(self) -> timedelta:
        """Time from the first to the last event."""
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ISO-8601 UTC times ending in ``Z``, duration in seconds."""
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "duration_s": self.duration.total_seconds(),
            "event_count": self.event_count,
            "signal_counts": dict(self.signal_counts),
            "event_ids": list(self.event_ids),
        }


def _summarise(refs: Sequence[EventRef]) -> Session:
    counts: dict[str, int] = {}
    for ref in refs:
        counts[ref.signal] = counts.get(ref.signal, 0) + 1
    return Session(
        start=refs[0].event_time,
        end=refs[-1].event_time,
        event_count=len(refs),
        signal_counts=dict(sorted(counts.items())),
        event_ids=tuple(ref.event_id for ref in refs),
    )


def _dedupe(refs: Iterable[EventRef]) -> list[EventRef]:
    kept: dict[str, EventRef] = {}
    for ref in refs:
        current = kept.get(ref.event_id)
        if current is None or ref < current:
            kept[ref.event_id] = ref
    return sorted(kept.values())


def starts_session(first: Any, previous: Any, at: Any, gap: Any, max_length: Any) -> bool:
    """Tell whether an event at ``at`` starts a new session: the one rule that cuts them.

    Walking a session's events in event-time order, it does when it comes ``gap`` or more after
    the ``previous`` event, or ``max_length`` (None: no cap) or more after the session's
    ``first`` event. Times and durations are datetimes and timedeltas here, epoch milliseconds
    in :mod:`usp_feast.engagements`.

    Example:
        >>> starts_session(0, 10, 39, gap=30, max_length=None)
        False
        >>> starts_session(0, 10, 40, gap=30, max_length=None), starts_session(0, 10, 20, 30, 20)
        (True, True)

    """
    return at - previous >= gap or (max_length is not None and at - first >= max_length)


def _split(refs: Sequence[EventRef], spec: SessionSpec) -> list[tuple[EventRef, ...]]:
    """Cut time-sorted, distinct events into sessions in one pass."""
    sessions: list[tuple[EventRef, ...]] = []
    current: list[EventRef] = []
    for ref in refs:
        if current and starts_session(
            current[0].event_time,
            current[-1].event_time,
            ref.event_time,
            spec.gap,
            spec.max_length,
        ):
            sessions.append(tuple(current))
            current = []
        current.append(ref)
    if current:
        sessions.append(tuple(current))
    return sessions


def sessionize(events: Iterable[SessionEvent], spec: SessionSpec) -> list[Session]:
    """Group events, given in any order, into sessions, newest first.

    The result equals feeding the same events one by one, in any order, into a
    :class:`SessionLogic` and closing every session.

    Args:
        events: The events, in any order; repeated event ids count once.
        spec: The gap and optional maximum length.

    Returns:
        The sessions, the one with the latest start first.

    Example:
        >>> t = datetime(2026, 5, 1, 10, tzinfo=UTC)
        >>> minutes = [0, 10, 45]  # 10:00 a   10:10 b   10:45 c   (gap 30m)
        >>> events = [SessionEvent(t + timedelta(minutes=m), "view", id_)
        ...           for m, id_ in zip(minutes, "abc")]
        >>> [s.event_ids for s in sessionize(events, SessionSpec(gap=timedelta(minutes=30)))]
        [('c',), ('a', 'b')]

    """
    refs = _dedupe(EventRef.of(event) for event in events)
    return [_summarise(group) for group in reversed(_split(refs, spec))]


@dataclass
class SessionState:
    """The open sessions of one key, as plain data a streaming operator can save and load.

    Each session keeps its distinct events (time, id, signal) sorted by time, not just a running
    summary: a late event can move where ``max_length`` splits a merged group, and an earlier
    replay of an id replaces the later copy, and both need the individual event times.

    Attributes:
        sessions: Open sessions sorted by start; each is a non-empty tuple of sorted events.

    Example:
        >>> logic = SessionLogic(SessionSpec(gap=timedelta(minutes=30)))
        >>> _ = logic.add(SessionEvent(datetime(2026, 5, 1, 10, tzinfo=UTC), "view", "a"))
        >>> logic.state.snapshot()
        {'version': 1, 'sessions': [[['2026-05-01T10:00:00Z', 'a', 'view']]]}
        >>> SessionState.restore(logic.state.snapshot()) == logic.state
        True

    """

    sessions: list[tuple[EventRef, ...]] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        """JSON-serialisable copy: ``{"version": 1, "sessions": [[[time, id, signal], ...]]}``."""
        return {
            "version": _SNAPSHOT_VERSION,
            "sessions": [
                [[_iso(ref.event_time), ref.event_id, ref.signal] for ref in session]
                for session in self.sessions
            ],
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any]) -> SessionState:
        """Rebuild the state from :meth:`snapshot` output.

        Raises:
            ValueError: When ``data`` is not a snapshot this version can read.

        """
        if not isinstance(data, Mapping) or data.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(
                f"cannot restore session state: expected a snapshot with version "
                f"{_SNAPSHOT_VERSION}, got {data!r:.200}"
            )
        sessions: list[tuple[EventRef, ...]] = []
        try:
            for raw_session in data["sessions"]:
                refs = []
                for moment, event_id, signal in raw_session:
                    parsed = _require_aware(datetime.fromisoformat(moment), "snapshot time")
                    refs.append(EventRef(parsed.astimezone(UTC), str(event_id), str(signal)))
                if not refs:
                    raise ValueError("a session has no events")
                sessions.append(tuple(sorted(refs)))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"cannot restore session state: malformed snapshot ({error})"
            ) from None
        sessions.sort()
        return cls(sessions)


class SessionLogic:
    """Incremental sessionizing for a streaming operator: add events, close on the watermark.

    Events may arrive in any order and more than once. Adding an event merges it with every open
    session it is linked to by gaps shorter than ``spec.gap`` and recomputes that group's
    ``max_length`` splits from its time-sorted events, so until something is closed the open
    sessions always equal :func:`sessionize` over the events seen so far.

    Closed sessions are forgotten. The logic does not track watermarks: the operator should drop
    events older than the last watermark it closed up to, as Flink does with late elements;
    such an event would otherwise open a fresh session next to one already emitted. For the
    same reason a replay is recognised only while its session is open.

    Args:
        spec: The gap and optional maximum length.
        state: State to resume from, as restored by :meth:`SessionState.restore`.

    Example:
        >>> t = datetime(2026, 5, 1, 10, tzinfo=UTC)
        >>> logic = SessionLogic(SessionSpec(gap=timedelta(minutes=30)))
        >>> logic.add(SessionEvent(t, "view", "a")).event_count
        1
        >>> logic.add(SessionEvent(t + timedelta(minutes=10), "view", "b")).event_ids
        ('a', 'b')
        >>> logic.close_until(t + timedelta(minutes=39))
        []
        >>> [s.event_ids for s in logic.close_until(t + timedelta(minutes=40))]
        [('a', 'b')]

    """

    def __init__(self, spec: SessionSpec, state: SessionState | None = None) -> None:
        self.spec = spec
        self.state = state if state is not None else SessionState()

    def add(self, event: SessionEvent) -> Session:
        """Add one event and return the session that now holds it (after any merge).

        A replay of an event id already in an open session changes nothing unless it is an
        earlier copy (by ``(event_time, signal)``), which then replaces the later one.
        """
        ref = EventRef.of(event)
        sessions = self.state.sessions
        for index, session in enumerate(sessions):
            existing = next((r for r in session if r.event_id == ref.event_id), None)
            if existing is None:
                continue
            if existing <= ref:
                return _summarise(session)
            # The earlier copy wins; dropping the later one may shorten or split its session.
            self._regroup(index, drop=existing)
            break
        position = bisect.bisect_right([s[0].event_time for s in sessions], ref.event_time)
        joins_previous = (
            position > 0 and ref.event_time - sessions[position - 1][-1].event_time < self.spec.gap
        )
        regrouped = self._regroup(position - 1 if joins_previous else position, add=ref)
        return _summarise(next(s for s in regrouped if ref in s))

    def close_until(self, watermark: datetime) -> list[Session]:
        """Remove and return, oldest first, every session with ``end + gap <= watermark``.

        Raises:
            ValueError: When ``watermark`` is naive.

        """
        _require_aware(watermark, "watermark")
        closed = [s for s in self.state.sessions if s[-1].event_time + self.spec.gap <= watermark]
        if closed:
            self.state.sessions = [
                s for s in self.state.sessions if s[-1].event_time + self.spec.gap > watermark
            ]
        return [_summarise(s) for s in closed]

    def close_all(self) -> list[Session]:
        """Remove and return every open session, oldest first (end of a bounded input)."""
        closed, self.state.sessions = self.state.sessions, []
        return [_summarise(s) for s in closed]

    def open_sessions(self) -> list[Session]:
        """The open sessions, oldest first."""
        return [_summarise(s) for s in self.state.sessions]

    def _regroup(
        self, lo: int, add: EventRef | None = None, drop: EventRef | None = None
    ) -> list[tuple[EventRef, ...]]:
        """Add or drop one event and recompute the open sessions it can affect.

        The one-pass split decides where a session starts from earlier events alone, so an event
        added or dropped at or after ``sessions[lo]``'s start cannot change sessions before
        ``lo``. After it, the affected run ends at the first session starting a gap or more after
        the run: there the split starts afresh whatever came before.

        Args:
            lo: Index of the session holding ``drop``, or of the first session that ``add``
                joins or precedes.
            add: An event to add.
            drop: An event of ``sessions[lo]`` to remove.

        Returns:
            The recomputed sessions that replaced the affected run.

        """
        sessions, gap = self.state.sessions, self.spec.gap
        pool = [] if add is None else [add]
        edge = None if add is None else add.event_time
        hi = lo
        while hi < len(sessions) and (edge is None or sessions[hi][0].event_time - edge < gap):
            pool.extend(r for r in sessions[hi] if r is not drop)
            last = sessions[hi][-1].event_time
            edge = last if edge is None else max(edge, last)
            hi += 1
        regrouped = _split(sorted(pool), self.spec)
        sessions[lo:hi] = regrouped
        return regrouped
