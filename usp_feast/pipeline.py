"""Turn one raw event into one signal row: the code path shared by every way events arrive.

The streaming job, the backfill and the demo all call :meth:`SignalPipeline.process`, so the
stream and the batch produce the same rows for the same events. A join signal's inputs go
through :meth:`JoinSidePipeline.process` the same way before the join sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from usp_feast.durations import format_duration
from usp_feast.joins import SideRecord
from usp_feast.spec import JoinSideSpec, SignalSpec
from usp_feast.versions import to_micros

__all__ = [
    "MAX_AHEAD",
    "EventTimeBounds",
    "JoinSidePipeline",
    "RejectedEvent",
    "SignalPipeline",
    "check_types",
    "parse_event_time",
]

MAX_AHEAD = timedelta(minutes=5)
"""How far ahead of the clock an event time may be (producers' clocks drift a little)."""

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "timestamp": (str, int, float),
}


class RejectedEvent(ValueError):
    """An event that cannot become a signal row; ``reason`` says why (for the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_event_time(value: Any) -> datetime:
    """Parse an ISO-8601 event time; a time without a zone is rejected, not guessed.

    Example:
        >>> parse_event_time("2026-11-26T17:00:00.123Z").isoformat()
        '2026-11-26T17:00:00.123000+00:00'
    """
    if not isinstance(value, str):
        raise RejectedEvent(f"event time must be an ISO-8601 string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RejectedEvent(f"event time {value!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        raise RejectedEvent(f"event time {value!r} has no timezone; send UTC with a Z")
    return moment.astimezone(UTC)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EventTimeBounds:
    """How far an event time may stray from the clock before the event is rejected.

    An event from the future would pull every watermark downstream ahead of real time (all
    later events would then count as late for windows, sessions and segments) and would stay
    a user's newest event until its time came. One older than ``max_age`` (the streaming jobs
    give a signal's retention) has nothing left to update online: history is the backfill's.

    Example:
        >>> at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
        >>> bounds = EventTimeBounds(max_age=timedelta(days=1), clock=lambda: at)
        >>> try:
        ...     bounds.check(at + timedelta(hours=1))
        ... except RejectedEvent as exc:
        ...     print(exc.reason.split(";")[0])
        event time 2026-11-27T13:00:00Z is 1h ahead of the clock (at most 5m)
    """

    max_ahead: timedelta = MAX_AHEAD
    max_age: timedelta | None = None
    clock: Callable[[], datetime] = field(default=_utc_now, compare=False)

    def check(self, moment: datetime) -> None:
        """Raise ``RejectedEvent`` naming the bound when ``moment`` is out of bounds."""
        now = self.clock()
        if moment - now > self.max_ahead:
            raise RejectedEvent(
                f"event time {_iso(moment)} is {format_duration(moment - now)} ahead of the "
                f"clock (at most {format_duration(self.max_ahead)}); fix the producer's clock"
            )
        if self.max_age is not None and now - moment > self.max_age:
            raise RejectedEvent(
                f"event time {_iso(moment)} is older than {format_duration(self.max_age)} "
                "(the signal's retention); load history with `usp backfill`"
            )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class SignalPipeline:
    """A signal's definition plus its transform instance.

    Example:
        >>> from usp_feast.transforms import SelectFields
        >>> class Pick(SelectFields):
        ...     fields = ("listing_id",)
        >>> spec = SignalSpec(name="wishlist", owner="t", source={"topic": "events.w"},
        ...     fields={"listing_id": "int"}, transform="m.Pick", retention="1d", validation="w")
        >>> event = {"event_id": "e1", "event_ts": "2026-11-26T17:00:00Z", "user_id": 4,
        ...          "listing_id": 9}
        >>> row = SignalPipeline(spec, Pick()).process(event)
        >>> row["user_id"], row["listing_id"]
        (4, 9)
    """

    spec: SignalSpec
    transform: Any
    bounds: EventTimeBounds = EventTimeBounds()

    @property
    def name(self) -> str:
        """The signal's name (dead letters say whose they are)."""
        return self.spec.name

    def process(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The signal row of an event (None when the transform drops it).

        Raises:
            RejectedEvent: Missing identity fields, a bad event time, a transform failure, or
                transform output that does not match the definition's fields.
        """
        spec = self.spec
        user = _user_of(event, spec.entity_key)
        event_id = _event_id_of(event, spec.event_id)
        event_time = parse_event_time(event.get(spec.event_time))
        self.bounds.check(event_time)
        extra = self.transform.validate(event) if hasattr(self.transform, "validate") else []
        if extra:
            raise RejectedEvent("; ".join(extra))
        try:
            fields = self.transform.transform(event)
        except Exception as exc:  # user code: any failure rejects this event, not the job
            raise RejectedEvent(f"transform {spec.transform} failed: {exc!r}") from exc
        if fields is None:
            return None
        self._check_output(fields)
        return {"user_id": user, "event_id": event_id, "event_ts": event_time, **fields}

    def _check_output(self, fields: Mapping[str, Any]) -> None:
        missing = [name for name in self.spec.fields if name not in fields]
        if missing:
            raise RejectedEvent(f"transform output lacks {', '.join(missing)}")
        check_types(self.spec.fields, fields, "transform output")


def check_types(types: Mapping[str, str], values: Mapping[str, Any], what: str) -> None:
    """Every value present in ``values`` has its declared type (None passes).

    Raises:
        RejectedEvent: Naming the first value of a wrong type.

    Example:
        >>> check_types({"price": "float"}, {"price": 12}, "event")  # an int is a float
        >>> check_types({"guests": "int"}, {"guests": True}, "event")
        Traceback (most recent call last):
        ...
        usp_feast.pipeline.RejectedEvent: event guests=True is not of declared type int
    """
    for name, kind in types.items():
        value = values.get(name)
        if value is None:
            continue
        allowed = _PYTHON_TYPES[kind]
        if not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool)):
            raise RejectedEvent(f"{what} {name}={value!r} is not of declared type {kind}")


def _user_of(event: Mapping[str, Any], field: str) -> int:
    user = event.get(field)
    if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
        raise RejectedEvent(f"{field} must be a positive integer, got {user!r}")
    return user


def _event_id_of(event: Mapping[str, Any], field: str) -> str:
    event_id = event.get(field)
    if not isinstance(event_id, str) or not event_id or "\x1f" in event_id:
        raise RejectedEvent(f"{field} must be a non-empty string, got {event_id!r}")
    return event_id


@dataclass(frozen=True)
class JoinSidePipeline:
    """One input of a join signal: a valid event becomes the record the join holds.

    Example:
        >>> side = JoinSideSpec(topic="events.listing_update", validation="listing_update",
        ...     key="listing_id", fields={"price": "float"})
        >>> key, record = JoinSidePipeline(side, "listing_update").process({"event_id": "u1",
        ...     "event_ts": "2026-11-26T17:00:00Z", "listing_id": 9, "price": 80})
        >>> key, record.time_ms, record.fields
        ('9', 1795712400000, {'price': 80.0})
    """

    side: JoinSideSpec
    name: str
    user_key: str | None = None
    """The event field holding the user (the left side's); kept as ``user_id``."""
    bounds: EventTimeBounds = EventTimeBounds()

    def process(self, event: Mapping[str, Any]) -> tuple[str, SideRecord]:
        """The event's join key (as text, the same for ``9`` on either side) and its record.

        Raises:
            RejectedEvent: A missing identity field or join key, a bad event time, or a field
                missing or not of its declared type.
        """
        side = self.side
        event_id = _event_id_of(event, side.event_id)
        moment = parse_event_time(event.get(side.event_time))
        self.bounds.check(moment)
        key = event.get(side.key)
        if key is None or isinstance(key, (bool, dict, list)) or "\x1f" in str(key):
            raise RejectedEvent(f"join key {side.key} must be a string or a number, got {key!r}")
        missing = [name for name in side.fields if event.get(name) is None]
        if missing:
            raise RejectedEvent(f"event lacks {', '.join(missing)}")
        check_types(side.fields, event, "event")
        fields = {
            name: float(event[name]) if kind == "float" else event[name]
            for name, kind in side.fields.items()
        }
        if self.user_key is not None:
            fields = {"user_id": _user_of(event, self.user_key), **fields}
        return str(key), SideRecord(
            time_ms=to_micros(moment) // 1000,
            event_id=event_id,
            event_ts=moment.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            fields=fields,
        )
