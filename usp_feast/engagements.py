"""Session engagements as a pure core: session windows with aggregates, and what to serve now.

Two flavours, both per user and in event time (epoch milliseconds):

* **Sliding windows** are :class:`usp_feast.windows.SlidingWindowLogic`.
* **Session windows** are :class:`SessionWindowLogic` here: a session's events are cut by the
  rule of :mod:`usp_feast.sessions` (a silence of ``gap`` or more, or ``max_length`` from the
  first event, starts a new session) and each open session keeps one
  :class:`~usp_feast.aggregates.Accumulator` per feature.

What a job does with them, and what this module decides:

* **While open**, every event changes the values a reader gets: :meth:`SessionWindowLogic.add`
  returns the newest session's :class:`Engagement`; :func:`session_payload` /
  :func:`window_payload` turn a user's state into one small document the store keeps per user,
  and :func:`served` picks from it what to serve at read time, honouring expiry by the reader's
  clock (a session past ``last event + gap`` is not current, even if no event or timer came).
* **Closing**: the watermark (the event time up to which input is complete) closes a session
  at ``last event + gap``; :meth:`SessionWindowLogic.fire` returns its final summary once, and
  again, marked ``update``, if an event within ``allowed_lateness`` changes it afterwards. A
  session is forgotten at ``last event + gap + allowed_lateness``; an event that could only
  land in a forgotten session is **late**: reported, not applied.
* **Merging**: an event between two open sessions that is closer than ``gap`` to both joins
  them; events are regrouped from their time-sorted list, so ``max_length`` cuts are the same
  whatever order the events arrived in. Replays of an event id count once.

As in :mod:`usp_feast.windows`, the operator passes the Flink watermark plus one (a Flink
watermark ``W`` promises no more events at or before ``W``).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from usp_feast.aggregates import Accumulator, AggregateSpec
from usp_feast.segments import iso_ms
from usp_feast.sessions import SessionSpec, starts_session
from usp_feast.versions import from_micros
from usp_feast.windows import SlidingWindowLogic, WindowState, named_aggregates

__all__ = [
    "Engagement",
    "SessionAdd",
    "SessionWindowLogic",
    "SessionWindowState",
    "feast_value",
    "served",
    "session_payload",
    "window_payload",
]

_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Engagement:
    """One session or window of one user: its values and the times that bound it.

    Attributes:
        started_ms: The session's first event, or the window's start.
        last_event_ms: The session's last event; None for a window.
        expires_ms: When it stops being current: ``last event + gap`` (or ``start +
            max_length`` if sooner) for a session, the end for a window.
        values: Feature name to aggregate value.
        closed: The watermark passed its end: these are final values (a summary).
        update: A closed one fired again because an event within the allowed lateness
            changed it.

    Example:
        >>> e = Engagement(0, 60_000, 1_860_000, {"events": 2}, closed=True)
        >>> e.to_row("browse_session", 42)["event_ts"]
        '1970-01-01T00:31:00.000Z'

    """

    started_ms: int
    last_event_ms: int | None
    expires_ms: int
    values: dict[str, Any]
    closed: bool = False
    update: bool = False

    def to_row(self, name: str, user_id: int | str) -> dict[str, Any]:
        """The history row of a closed one (times in epoch ms, ``event_ts`` ISO-8601).

        Its record id is the start, so a re-fired summary is a new version of the same record;
        its event time is when it closed, so a point-in-time read never sees it earlier.
        """
        return {
            "user_id": int(user_id),
            "event_id": f"{name}:{self.started_ms}",
            "event_ts": iso_ms(self.expires_ms),
            **self.values,
            "started_at": self.started_ms,
            "last_event_at": self.last_event_ms,
            "expires_at": self.expires_ms,
            "closed": self.closed,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the query API: ISO-8601 UTC times."""
        return {
            "started_at": iso_ms(self.started_ms),
            "last_event_at": None if self.last_event_ms is None else iso_ms(self.last_event_ms),
            "expires_at": iso_ms(self.expires_ms),
            "closed": self.closed,
            "values": dict(self.values),
        }


class _Event(NamedTuple):
    # A tuple, not a dataclass: Flink pickles the state on every update, and tuples pickle
    # several times faster. Ordered by (time, id, signal); the row holds only the fields the
    # aggregates read (the event time is ``at_ms``).
    at_ms: int
    event_id: str
    signal: str
    row: Mapping[str, Any]

    def key(self) -> tuple[int, str, str]:
        return (self.at_ms, self.event_id, self.signal)

    def timed_row(self) -> dict[str, Any]:
        """The row as the accumulators read it, with its event time."""
        return {**self.row, "event_ts": from_micros(self.at_ms * 1000)}


@dataclass
class _Session:
    events: list[_Event]
    accumulators: dict[str, Accumulator]
    fired: bool = False  # fired at least once
    changed: bool = True  # changed since it last fired (or never fired)


@dataclass
class SessionWindowState:
    """The open sessions of one user, oldest first (kept in Flink keyed state, pickled).

    Each session keeps its events (time, id, signal and the row) besides its accumulators: a
    late event can merge sessions or move a ``max_length`` cut, and then the sessions are
    regrouped from their events.
    """

    sessions: list[_Session] = field(default_factory=list)
    ids: dict[str, _Event] = field(default_factory=dict)

    def __getstate__(self) -> list[_Session]:
        return self.sessions  # ``ids`` is an index of the sessions' events: rebuilt on load

    def __setstate__(self, sessions: list[_Session]) -> None:
        self.sessions = sessions
        self.ids = {e.event_id: e for session in sessions for e in session.events}

    @property
    def event_count(self) -> int:
        """Events held, over all open sessions."""
        return len(self.ids)


@dataclass(frozen=True)
class SessionAdd:
    """What adding one event did.

    Attributes:
        late: Every session it could join is forgotten: nothing was applied.
        current: The user's newest open session after the event (what a reader gets now).
    """

    late: bool
    current: Engagement | None = None


class SessionWindowLogic:
    """Applies events and the watermark to one user's :class:`SessionWindowState`.

    Args:
        spec: The gap and optional maximum length.
        aggregates: Feature name to aggregate (a sequence: keyed by each one's name).
        allowed_lateness: How long after a session closes events still change it.

    Raises:
        ValueError: When there is no aggregate, or the lateness is negative or not whole ms.

    Example:
        >>> logic = SessionWindowLogic(SessionSpec(gap=timedelta(minutes=30)),
        ...                            {"events": AggregateSpec.parse("count")})
        >>> state = SessionWindowState()
        >>> logic.add(state, {}, "a", "view", 0, watermark_ms=0).current.values
        {'events': 1}
        >>> logic.add(state, {}, "b", "view", 600_000, watermark_ms=0).current.expires_ms
        2400000
        >>> logic.deadline(state)
        2400000
        >>> [(s.started_ms, s.values) for s in logic.fire(state, 2_400_000)]
        [(0, {'events': 2})]

    """

    def __init__(
        self,
        spec: SessionSpec,
        aggregates: Mapping[str, AggregateSpec] | Sequence[AggregateSpec],
        allowed_lateness: timedelta = timedelta(0),
    ) -> None:
        self.spec = spec
        self.aggregates = named_aggregates(aggregates)
        if not self.aggregates:
            raise ValueError("a session needs at least one aggregate, e.g. count")
        if allowed_lateness < timedelta(0) or allowed_lateness % _MS:
            raise ValueError(
                f"allowed_lateness must be zero or more whole milliseconds, got {allowed_lateness}"
            )
        self._gap = spec.gap // _MS
        self._max = None if spec.max_length is None else spec.max_length // _MS
        self._lateness = allowed_lateness // _MS

    def add(
        self,
        state: SessionWindowState,
        row: Mapping[str, Any],
        event_id: str,
        signal: str,
        at_ms: int,
        watermark_ms: int,
    ) -> SessionAdd:
        """Add one event at ``at_ms`` (``row`` carries the fields the aggregates read).

        Raises:
            usp_feast.aggregates.AggregateError: When an aggregate meets bad data in ``row``;
                the state is then unchanged.

        """
        if at_ms + self._gap + self._lateness <= watermark_ms and not self._joins_open(
            state, at_ms
        ):
            return SessionAdd(late=True)
        event = _Event(at_ms, event_id, signal, dict(row))
        timed = event.timed_row()
        # Check the row once against fresh accumulators so bad data changes no session.
        for aggregate in self.aggregates.values():
            aggregate.accumulator().add(timed)
        seen = state.ids.get(event_id)
        if seen is not None:
            if seen.key() <= event.key():  # a replay; the earliest copy is kept, whatever the order
                return SessionAdd(late=False, current=self.current(state))
            self._regroup(state, self._holding(state, seen), drop=seen)
        state.ids[event_id] = event
        sessions = state.sessions
        last = sessions[-1] if sessions else None
        if last is None or at_ms >= last.events[-1].at_ms:
            # In order (the common case): the event extends the newest session or starts one.
            if last is None or starts_session(
                last.events[0].at_ms, last.events[-1].at_ms, at_ms, self._gap, self._max
            ):
                sessions.append(_Session([], self._fresh()))
            newest = sessions[-1]
            newest.events.append(event)
            for accumulator in newest.accumulators.values():
                accumulator.add(timed)
            newest.changed = True
        else:
            starts = [s.events[0].at_ms for s in sessions]
            position = bisect.bisect_right(starts, at_ms)
            joins_previous = (
                position > 0 and at_ms - sessions[position - 1].events[-1].at_ms < self._gap
            )
            self._regroup(state, position - 1 if joins_previous else position, add=event)
        return SessionAdd(late=False, current=self.current(state))

    def current(self, state: SessionWindowState) -> Engagement | None:
        """The newest open session: what a reader is served until it expires."""
        return self._engagement(state.sessions[-1]) if state.sessions else None

    def fire(self, state: SessionWindowState, watermark_ms: int) -> list[Engagement]:
        """Summaries of the closed sessions that changed since they last fired, oldest first.

        A session closes when the watermark reaches its last event plus the gap; it is
        forgotten once the watermark also passes the allowed lateness.
        """
        closed, kept = [], []
        for session in state.sessions:
            end = session.events[-1].at_ms + self._gap
            if end <= watermark_ms and session.changed:
                closed.append(self._engagement(session, closed=True))
                session.fired, session.changed = True, False
            if end + self._lateness <= watermark_ms:
                for event in session.events:
                    del state.ids[event.event_id]
            else:
                kept.append(session)
        state.sessions = kept
        return closed

    def deadline(self, state: SessionWindowState) -> int | None:
        """The watermark at which :meth:`fire` next has work (the job's timer), if any."""
        return min(
            (
                s.events[-1].at_ms + self._gap + (0 if s.changed else self._lateness)
                for s in state.sessions
            ),
            default=None,
        )

    def _engagement(self, session: _Session, closed: bool = False) -> Engagement:
        first, last = session.events[0].at_ms, session.events[-1].at_ms
        expires = last + self._gap
        if self._max is not None:
            expires = min(expires, first + self._max)
        values = {name: acc.result() for name, acc in session.accumulators.items()}
        return Engagement(first, last, expires, values, closed, closed and session.fired)

    def _fresh(self) -> dict[str, Accumulator]:
        return {name: aggregate.accumulator() for name, aggregate in self.aggregates.items()}

    def _joins_open(self, state: SessionWindowState, at_ms: int) -> bool:
        """Tell whether an event at ``at_ms`` joins a session still kept (not forgotten)."""
        sessions = state.sessions
        position = bisect.bisect_right([s.events[0].at_ms for s in sessions], at_ms)
        return (position > 0 and at_ms - sessions[position - 1].events[-1].at_ms < self._gap) or (
            position < len(sessions) and sessions[position].events[0].at_ms - at_ms < self._gap
        )

    @staticmethod
    def _holding(state: SessionWindowState, event: _Event) -> int:
        return next(i for i, s in enumerate(state.sessions) if event in s.events)

    def _regroup(
        self,
        state: SessionWindowState,
        lo: int,
        add: _Event | None = None,
        drop: _Event | None = None,
    ) -> None:
        """Add or drop one event and recompute the open sessions it can affect.

        The cut rule decides where a session starts from earlier events alone, so nothing
        before ``sessions[lo]`` changes; the affected run ends at the first session starting a
        gap or more after it (see :meth:`usp_feast.sessions.SessionLogic._regroup`).
        """
        sessions = state.sessions
        pool = [] if add is None else [add]
        edge = None if add is None else add.at_ms
        fired_ids: set[str] = set()
        hi = lo
        while hi < len(sessions) and (
            edge is None or sessions[hi].events[0].at_ms - edge < self._gap
        ):
            session = sessions[hi]
            if session.fired:
                fired_ids.update(e.event_id for e in session.events)
            pool.extend(e for e in session.events if e is not drop)
            last = session.events[-1].at_ms
            edge = last if edge is None else max(edge, last)
            hi += 1
        if drop is not None:
            del state.ids[drop.event_id]
        pool.sort(key=_Event.key)
        regrouped: list[_Session] = []
        for event in pool:
            if not regrouped or starts_session(
                regrouped[-1].events[0].at_ms,
                regrouped[-1].events[-1].at_ms,
                event.at_ms,
                self._gap,
                self._max,
            ):
                regrouped.append(_Session([], self._fresh()))
            session = regrouped[-1]
            session.events.append(event)
            timed = event.timed_row()
            for accumulator in session.accumulators.values():
                accumulator.add(timed)
            session.fired = session.fired or event.event_id in fired_ids
        sessions[lo:hi] = regrouped


def session_payload(current: Engagement) -> dict[str, Any]:
    """What the store keeps per user for a session view: the newest open session."""
    return {
        "kind": "session",
        "started": current.started_ms,
        "last": current.last_event_ms,
        "expires": current.expires_ms,
        "values": current.values,
    }


def window_payload(
    logic: SlidingWindowLogic, state: WindowState, after_ms: int
) -> dict[str, Any] | None:
    """What the store keeps per user for a sliding-window view (None when nothing).

    Every window a reader may be served from ``after_ms`` (the event just applied) on.
    """
    windows = logic.serving(state, after_ms)
    if not windows:
        return None
    return {
        "kind": "window",
        "step": logic.spec.step // _MS,
        "expires": windows[-1].end_ms,
        "windows": [[w.start_ms, w.end_ms, w.values] for w in windows],
    }


def served(payload: Mapping[str, Any] | None, now_ms: int) -> Engagement | None:
    """The engagement to serve at ``now_ms`` from a stored payload, expiry honoured.

    A session is served until ``expires``. Of a user's windows, the one ending at the next step
    boundary after ``now_ms`` is served (see :meth:`SlidingWindowLogic.current`); when the
    payload has none, no event fell in it, and nothing is served.

    Example:
        >>> payload = {"kind": "window", "step": 300_000, "expires": 900_000,
        ...            "windows": [[0, 600_000, {"count": 2}], [300_000, 900_000, {"count": 1}]]}
        >>> served(payload, 599_999).values, served(payload, 600_000).values
        ({'count': 2}, {'count': 1})
        >>> served(payload, 900_000) is None
        True

    """
    if not payload or now_ms >= payload["expires"]:
        return None
    if payload["kind"] == "session":
        return Engagement(
            payload["started"], payload["last"], payload["expires"], dict(payload["values"])
        )
    step = payload["step"]
    boundary = now_ms - now_ms % step + step
    for start, end, values in payload["windows"]:
        if end == boundary:
            return Engagement(start, None, end, dict(values))
    return None


def feast_value(value: Any) -> Any:
    """An aggregate value as a Feast feature holds it.

    ``top_k``'s ``[value, count]`` pairs become the values alone (as query features serve
    them); anything else is unchanged.

    Example:
        >>> feast_value([["Rome", 3], ["Oslo", 1]]), feast_value(["Rome", "Oslo"])
        (['Rome', 'Oslo'], ['Rome', 'Oslo'])

    """
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [pair[0] for pair in value]
    return value
