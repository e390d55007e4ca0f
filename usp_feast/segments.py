"""Segment membership as a pure state machine: trigger, start delay, expiry reset, exit, cooldown.

One :class:`MembershipState` per user; :class:`SegmentLogic` applies signal events and the
passing of event time to it and returns the :class:`MembershipChange` records to publish. The
Flink operator (:mod:`usp_feast.flink_segments`) only loads and saves the state, registers the
timer :meth:`SegmentLogic.deadline` asks for and calls the logic; tests drive the same logic
with timelines.

Rules (all times are event times, epoch milliseconds):

* A **trigger** enters an outside user at its time (``entered``), or, with a start delay, at
  ``trigger + start_delay`` unless an exit comes first. Membership lasts ``expires_after`` past
  the newest trigger: a re-trigger of a member moves the expiry (``renewed``).
  ``max_membership`` caps it at ``entered + max_membership`` whatever the re-triggers.
* An **exit** signal ends a membership at its time (``exited``); the end of ``expires_after``
  without a trigger does so at the expiry time (``expired``), even when no event arrives,
  because the job's timer calls :meth:`SegmentLogic.advance`.
* After leaving, triggers before ``left + cooldown`` do not re-enter.
* Out-of-order input (within the job's watermark bound) gives the order-independent outcome:
  an exit older than the current membership's entry is stale and ignored; a trigger older than
  the exit that followed it does not re-enter, and when that exit found the user outside, the
  short membership between them is recorded after the fact (``entered`` then ``exited``).
* Every change names its cause: the id of the event behind it, or ``expiry:``/``start:`` ids
  for timer-driven changes. Replaying input (a job restored from a checkpoint) reproduces the
  same ids, which is how the versioned store keeps readers free of duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from usp_feast.durations import format_duration
from usp_feast.filters import Filter

__all__ = [
    "ENTERED",
    "EXITED",
    "EXPIRED",
    "RENEWED",
    "MembershipChange",
    "MembershipState",
    "SegmentEvent",
    "SegmentLogic",
    "SegmentRules",
    "SignalCondition",
    "is_member",
    "iso_ms",
    "message_from_row",
    "replay",
    "row_event_ms",
]

ENTERED, RENEWED, EXITED, EXPIRED = "entered", "renewed", "exited", "expired"
_SNAPSHOT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text, e.g. ``2026-11-26T17:00:00.123Z``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_member(in_segment: bool, expires_at_ms: int | None, now_ms: int) -> bool:
    """Membership as served at ``now_ms``: a stored member whose expiry passed is not one.

    Readers apply this so expiry holds at read time, before the job's timer has fired.
    """
    return bool(in_segment) and expires_at_ms is not None and now_ms < expires_at_ms


@dataclass(frozen=True)
class SignalCondition:
    """A signal, optionally narrowed by a filter on its fields (``guests >= 2``)."""

    signal: str
    where: Filter | None = None

    def matches(self, signal: str, fields: Mapping[str, Any]) -> bool:
        """True when an event of ``signal`` with ``fields`` meets the condition."""
        return signal == self.signal and (self.where is None or self.where.matches(fields))

    def describe(self) -> str:
        """The condition as a user wrote it."""
        return self.signal if self.where is None else f"{self.signal} where {self.where}"


@dataclass(frozen=True)
class SegmentRules:
    """What puts a user into a segment, keeps them there and takes them out.

    Example:
        >>> rules = SegmentRules(trigger=SignalCondition("search"),
        ...                      exits=(SignalCondition("booking"),),
        ...                      expires_after=timedelta(days=14))
        >>> rules.describe()
        'enter on search, leave on booking or after 2w without search'
    """

    trigger: SignalCondition
    expires_after: timedelta
    exits: tuple[SignalCondition, ...] = ()
    start_delay: timedelta = timedelta(0)
    max_membership: timedelta | None = None
    cooldown: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.expires_after <= self.start_delay:
            raise ValueError("expires_after must be longer than start_delay")
        if self.max_membership is not None and self.max_membership <= timedelta(0):
            raise ValueError("max_membership must be longer than zero")

    @property
    def signals(self) -> tuple[str, ...]:
        """Every signal the segment listens to (trigger first), without repeats."""
        names = [self.trigger.signal, *(e.signal for e in self.exits)]
        return tuple(dict.fromkeys(names))

    def describe(self) -> str:
        """One line a product engineer can read."""
        leave = " or ".join(e.describe() for e in self.exits)
        expiry = f"after {format_duration(self.expires_after)} without {self.trigger.signal}"
        text = f"enter on {self.trigger.describe()}, leave on {leave} or {expiry}"
        return text if self.exits else text.replace("leave on  or ", "leave ")


@dataclass(frozen=True)
class SegmentEvent:
    """One signal event as the segment logic sees it."""

    signal: str
    event_id: str
    at_ms: int
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MembershipChange:
    """One change of a user's membership, as published and stored.

    Attributes:
        change: ``entered``, ``renewed``, ``exited`` or ``expired``.
        cause: Id of what caused it (an event id, or ``expiry:``/``start:`` for timers);
            unique per user and segment, and the same when input is replayed.
        at_ms: Event time of the change.
        in_segment: Membership right after the change.
        entered_at_ms: Start of the membership the change belongs to.
        expires_at_ms: When that membership ends (members) or ended (after leaving).
        reason: Why, in words.

    """

    change: str
    cause: str
    at_ms: int
    in_segment: bool
    entered_at_ms: int
    expires_at_ms: int
    reason: str

    def to_row(self, segment: str, user_id: str) -> dict[str, Any]:
        """The change as stored (history record of view ``segment_<name>``; times in ms)."""
        return {
            "segment": segment,
            "user_id": user_id,
            "change": self.change,
            "event_id": self.cause,
            "event_ts": iso_ms(self.at_ms),
            "in_segment": self.in_segment,
            "entered_at": self.entered_at_ms,
            "expires_at": self.expires_at_ms,
            "reason": self.reason,
        }

    def to_dict(self, segment: str, user_id: str) -> dict[str, Any]:
        """The change as published on ``usp.segment.<name>`` (times as ISO-8601 UTC)."""
        return message_from_row(self.to_row(segment, user_id))


def row_event_ms(row: Mapping[str, Any]) -> int:
    """Event time of a stored change row (:meth:`MembershipChange.to_row`) in epoch ms."""
    moment = datetime.fromisoformat(str(row["event_ts"]).replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def message_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored change row (:meth:`MembershipChange.to_row`) as the segment topic carries it."""
    return {**row, "entered_at": iso_ms(row["entered_at"]), "expires_at": iso_ms(row["expires_at"])}


@dataclass
class MembershipState:
    """Everything the logic remembers about one user (saved in Flink state between events).

    Attributes:
        status: ``out``, ``pending`` (triggered, waiting for the start delay) or ``in``.
        entered_at: Start of the current membership (``in``).
        expires_at: Planned end of the current membership (``in``).
        starts_at: When a pending membership starts (``pending``).
        last_trigger: Newest trigger time of the current or pending membership.
        last_trigger_id: Event id of that trigger.
        trigger_id: Id of the trigger that made the membership pending.
        left_at: End of the newest membership that ended.
        cooldown_until: No re-entry by a trigger before this time.
        unmatched_exit: ``(time, event id)`` of the newest exit that found the user outside.

    """

    status: str = "out"
    entered_at: int | None = None
    expires_at: int | None = None
    starts_at: int | None = None
    last_trigger: int | None = None
    last_trigger_id: str | None = None
    trigger_id: str | None = None
    left_at: int | None = None
    cooldown_until: int | None = None
    unmatched_exit: tuple[int, str] | None = None

    def snapshot(self) -> dict[str, Any]:
        """Plain data for Flink state (``restore`` reads it back)."""
        data = asdict(self)
        data["unmatched_exit"] = list(self.unmatched_exit) if self.unmatched_exit else None
        return {"v": _SNAPSHOT_VERSION, **data}

    @classmethod
    def restore(cls, data: Mapping[str, Any] | None) -> MembershipState:
        """The state saved by :meth:`snapshot` (a fresh one for None)."""
        if not data:
            return cls()
        if data.get("v") != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown segment state version {data.get('v')!r}")
        fields = {k: v for k, v in data.items() if k != "v"}
        exit_ = fields.get("unmatched_exit")
        fields["unmatched_exit"] = (int(exit_[0]), str(exit_[1])) if exit_ else None
        return cls(**fields)


class SegmentLogic:
    """Applies events and time to one user's :class:`MembershipState` (pure, no runtime).

    Example:
        >>> rules = SegmentRules(trigger=SignalCondition("search"),
        ...                      exits=(SignalCondition("booking"),),
        ...                      expires_after=timedelta(days=14))
        >>> logic, state = SegmentLogic(rules), MembershipState()
        >>> [c.change for c in logic.on_event(state, SegmentEvent("search", "s1", 0))]
        ['entered']
        >>> logic.deadline(state) == 14 * 86_400_000
        True
        >>> [c.change for c in logic.advance(state, 14 * 86_400_000)]
        ['expired']
    """

    def __init__(self, rules: SegmentRules) -> None:
        self.rules = rules
        self._expires_ms = _ms(rules.expires_after)
        self._delay_ms = _ms(rules.start_delay)
        self._max_ms = None if rules.max_membership is None else _ms(rules.max_membership)
        self._cooldown_ms = _ms(rules.cooldown)

    def on_event(self, state: MembershipState, event: SegmentEvent) -> list[MembershipChange]:
        """Apply one signal event; returns the changes it causes (often none)."""
        changes = self.advance(state, event.at_ms)  # an expiry due before the event comes first
        for condition in self.rules.exits:
            if condition.matches(event.signal, event.fields):
                return changes + self._exit(state, event, condition)
        if self.rules.trigger.matches(event.signal, event.fields):
            return changes + self._trigger(state, event)
        return changes

    def advance(self, state: MembershipState, now_ms: int) -> list[MembershipChange]:
        """Event time has reached ``now_ms``: start pending memberships, expire due ones."""
        changes: list[MembershipChange] = []
        if state.status == "pending" and state.starts_at is not None and state.starts_at <= now_ms:
            changes.append(self._start(state))
        if state.status == "in" and state.expires_at is not None and state.expires_at <= now_ms:
            changes.append(self._expire(state))
        return changes

    def deadline(self, state: MembershipState) -> int | None:
        """The event time at which :meth:`advance` has work to do (the job's timer)."""
        if state.status == "pending":
            return state.starts_at
        if state.status == "in":
            return state.expires_at
        return None

    # -- transitions -------------------------------------------------------------------------

    def _trigger(self, state: MembershipState, event: SegmentEvent) -> list[MembershipChange]:
        at = event.at_ms
        late_exit = state.unmatched_exit
        if late_exit is not None and at < late_exit[0]:
            return self._membership_before_exit(state, event, late_exit)
        if state.status == "in":
            return self._renew(state, event)
        if state.status == "pending":
            _saw_trigger(state, event)
            state.starts_at = min(state.starts_at or at + self._delay_ms, at + self._delay_ms)
            return []
        if state.left_at is not None and at < state.left_at:
            return []  # older than the end of the last membership: stale
        if state.cooldown_until is not None and at < state.cooldown_until:
            return []
        state.unmatched_exit = None
        state.last_trigger = state.last_trigger_id = None
        _saw_trigger(state, event)
        state.trigger_id = event.event_id
        if self._delay_ms:
            state.status, state.starts_at = "pending", at + self._delay_ms
            return []
        state.status, state.entered_at = "in", at
        state.expires_at = self._planned_end(at, at)
        return [self._change(ENTERED, event.event_id, at, state, f"trigger {event.signal}")]

    def _renew(self, state: MembershipState, event: SegmentEvent) -> list[MembershipChange]:
        assert state.entered_at is not None and state.expires_at is not None
        at = event.at_ms
        _saw_trigger(state, event)
        newest = state.last_trigger or at
        if at < state.entered_at:
            # A late trigger from before this membership began: when the membership it
            # started would have lasted until then, the user has been in since this trigger.
            chains = at + self._expires_ms > state.entered_at and not self._delay_ms
            if not chains or (state.left_at is not None and at < state.left_at):
                return []
            state.entered_at = at
            state.expires_at = self._planned_end(at, newest)
            return [self._change(ENTERED, event.event_id, at, state, f"trigger {event.signal}")]
        renewed = self._planned_end(state.entered_at, newest)
        if renewed <= state.expires_at:
            return []  # the hard maximum is reached
        state.expires_at = renewed
        return [self._change(RENEWED, event.event_id, at, state, f"re-trigger by {event.signal}")]

    def _membership_before_exit(
        self, state: MembershipState, event: SegmentEvent, late_exit: tuple[int, str]
    ) -> list[MembershipChange]:
        """A trigger older than an exit that found the user outside arrived after it.

        In event-time order the user entered at the trigger and left at that exit (or expired
        first): record that membership after the fact. The current state is not changed.
        """
        at, (exit_at, exit_id) = event.at_ms, late_exit
        starts = at + self._delay_ms
        if (state.left_at is not None and at < state.left_at) or starts >= exit_at:
            return []
        if state.status == "out" and state.cooldown_until is not None and at < state.cooldown_until:
            return []
        planned = self._planned_end(starts, at)
        cause = f"start:{event.event_id}" if self._delay_ms else event.event_id
        trigger = f"trigger {event.signal}"
        entered = MembershipChange(ENTERED, cause, starts, True, starts, planned, trigger)
        if planned <= exit_at:
            ended = MembershipChange(
                EXPIRED,
                f"expiry:{starts}",
                planned,
                False,
                starts,
                planned,
                self._expiry_reason(starts, planned),
            )
        else:
            state.unmatched_exit = None
            reason = "exit (it arrived before the trigger)"
            ended = MembershipChange(EXITED, exit_id, exit_at, False, starts, exit_at, reason)
        state.left_at = max(state.left_at or ended.at_ms, ended.at_ms)
        if state.status == "out" and self._cooldown_ms:
            state.cooldown_until = ended.at_ms + self._cooldown_ms
        return [entered, ended]

    def _exit(
        self, state: MembershipState, event: SegmentEvent, condition: SignalCondition
    ) -> list[MembershipChange]:
        at = event.at_ms
        if state.status == "in":
            assert state.entered_at is not None
            if at >= state.entered_at:
                newer = (state.last_trigger, state.last_trigger_id)
                reason = f"exit on {condition.describe()}"
                changes = [self._leave(state, EXITED, event.event_id, at, reason)]
                if newer[0] is not None and newer[1] is not None and newer[0] > at:
                    # A trigger newer than this exit arrived first: in event-time order the
                    # user left and came back with it.
                    again = SegmentEvent(self.rules.trigger.signal, newer[1], newer[0])
                    changes += self._trigger(state, again)
                return changes
        elif state.status == "pending":
            if state.last_trigger is not None and at >= state.last_trigger:
                state.status, state.starts_at, state.trigger_id = "out", None, None
                state.last_trigger = state.last_trigger_id = None
        # An exit that ended nothing (the user was outside, or it is older than the current
        # membership): remembered in case a trigger older than it arrives later.
        if state.unmatched_exit is None or at > state.unmatched_exit[0]:
            state.unmatched_exit = (at, event.event_id)
        return []

    def _start(self, state: MembershipState) -> MembershipChange:
        assert state.starts_at is not None and state.last_trigger is not None
        state.status, state.entered_at = "in", state.starts_at
        state.expires_at = self._planned_end(state.starts_at, state.last_trigger)
        reason = f"trigger {self.rules.trigger.signal} + start delay"
        delay = format_duration(self.rules.start_delay)
        change = self._change(
            ENTERED, f"start:{state.trigger_id}", state.starts_at, state, f"{reason} {delay}"
        )
        state.starts_at = None
        return change

    def _expire(self, state: MembershipState) -> MembershipChange:
        assert state.entered_at is not None and state.expires_at is not None
        reason = self._expiry_reason(state.entered_at, state.expires_at)
        return self._leave(state, EXPIRED, f"expiry:{state.entered_at}", state.expires_at, reason)

    def _expiry_reason(self, entered_at: int, expires_at: int) -> str:
        if self.rules.max_membership is not None and expires_at == entered_at + (self._max_ms or 0):
            return f"maximum membership of {format_duration(self.rules.max_membership)} reached"
        return f"no {self.rules.trigger.signal} for {format_duration(self.rules.expires_after)}"

    def _leave(
        self, state: MembershipState, change: str, cause: str, at: int, reason: str
    ) -> MembershipChange:
        assert state.entered_at is not None
        state.status, state.expires_at = "out", at
        result = self._change(change, cause, at, state, reason)
        state.left_at = at if state.left_at is None else max(state.left_at, at)
        state.cooldown_until = at + self._cooldown_ms if self._cooldown_ms else None
        state.entered_at = state.expires_at = state.trigger_id = None
        state.last_trigger = state.last_trigger_id = None
        return result

    def _planned_end(self, entered_at: int, last_trigger: int) -> int:
        end = last_trigger + self._expires_ms
        return end if self._max_ms is None else min(end, entered_at + self._max_ms)

    @staticmethod
    def _change(
        change: str, cause: str, at: int, state: MembershipState, reason: str
    ) -> MembershipChange:
        assert state.entered_at is not None and state.expires_at is not None
        return MembershipChange(
            change=change,
            cause=cause,
            at_ms=at,
            in_segment=state.status == "in",
            entered_at_ms=state.entered_at,
            expires_at_ms=state.expires_at,
            reason=reason,
        )


def _saw_trigger(state: MembershipState, event: SegmentEvent) -> None:
    if state.last_trigger is None or event.at_ms > state.last_trigger:
        state.last_trigger, state.last_trigger_id = event.at_ms, event.event_id


def replay(
    logic: SegmentLogic, events: Sequence[SegmentEvent], until_ms: int | None = None
) -> tuple[MembershipState, list[MembershipChange]]:
    """Apply ``events`` in the given order, then advance to ``until_ms`` (tests, backfill)."""
    state, changes = MembershipState(), []
    for event in events:
        changes += logic.on_event(state, event)
    if until_ms is not None:
        changes += logic.advance(state, until_ms)
    return state, changes
