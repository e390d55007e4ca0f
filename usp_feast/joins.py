"""Stream-stream joins as a pure core: which right record each left event is joined with, and when.

A join signal joins a **left** stream (e.g. ``wishlist_add`` events) with a **right** stream
(e.g. ``listing_update`` events) on a shared key (e.g. ``listing_id``). The Flink operator keys
both streams by that key, keeps one :class:`JoinState` per key, and only loads and saves it,
calls :class:`JoinLogic` for each event and timer, and registers the timer
:meth:`JoinLogic.deadline` asks for. Tests drive the same logic with timelines.

Rules (all times are event times in epoch milliseconds, see :class:`JoinRules`):

* **latest** ("enrich with the latest", a temporal join): a left at ``t`` takes the newest right
  at or before ``t`` and at most ``state_ttl_ms`` older (on equal times the largest event id).
  With ``wait_ms``, a left that has none takes instead the earliest right in
  ``(t, t + wait_ms]`` (on equal times the smallest event id).
* **interval**: a left at ``t`` is joined with *every* right in
  ``[t - before_ms, t + after_ms]``, one output per pair.
* A left with no match is emitted with nulls, or dropped (and reported) without
  ``emit_missing``.

**Why lefts wait for the watermark.** The watermark is the event time up to which input is
complete: every event before it has arrived. A left is emitted only once the watermark has
passed every right that could change its result (``t`` for latest, ``t + after_ms`` for an
interval, up to ``t + wait_ms`` while waiting). Rights arrive out of order, so emitting a left as
soon as it comes would join it with whatever happened to arrive first; waiting makes the output
depend on event times alone, so the stream and a batch recompute over the same events agree. An
event before the watermark is **late**: not applied (``add_*`` returns False) and set aside by
the caller. As in :mod:`usp_feast.windows`, the operator passes the Flink watermark plus one (a
Flink watermark ``W`` promises no more events at or before ``W``).

**State stays small.** Lefts are held only until emitted. Every pending or future left is at or
after ``cut = min(watermark, oldest pending left)``, so of the rights before ``cut`` a latest
join keeps only the newest (while within the TTL) and an interval join only those within
``before_ms``; the rest are dropped on every :meth:`JoinLogic.fire` and ``add_right``. A replay
of an event id replaces the record held, so it never yields two outputs; a replay of one
already emitted is late.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Fired",
    "JoinLogic",
    "JoinRules",
    "JoinState",
    "Joined",
    "SideRecord",
]

_HOWS = ("latest", "interval")


@dataclass(frozen=True)
class JoinRules:
    """How a left record picks right records, how long state is kept, and what a miss does.

    Attributes:
        how: ``"latest"``: the right record valid at the left's time; ``"interval"``: every
            right record within ``[t - before_ms, t + after_ms]`` of the left's time ``t``.
        state_ttl_ms: Latest: how much older than the left a right may be and still match.
            Interval: a cap on how long rights are kept (at least ``before_ms``).
        wait_ms: Latest only: when no right is at or before the left, how long (in event time)
            to wait for the first right after it.
        before_ms: Interval only: how long before the left a right may be.
        after_ms: Interval only: how long after the left a right may be.
        emit_missing: Emit a left without a match with nulls; False drops it (reported in
            :attr:`Fired.dropped`).

    Raises:
        ValueError: With one sentence naming the field and the fix, on nonsense combinations.

    Example:
        >>> JoinRules("interval", state_ttl_ms=60_000, before_ms=30_000, after_ms=5_000).how
        'interval'
        >>> JoinRules("latest", state_ttl_ms=60_000, after_ms=5_000)
        Traceback (most recent call last):
        ...
        ValueError: join before_ms and after_ms apply to how='interval' only...

    """

    how: Literal["latest", "interval"]
    state_ttl_ms: int
    wait_ms: int = 0
    before_ms: int = 0
    after_ms: int = 0
    emit_missing: bool = True

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    def _problem(self) -> str | None:
        if self.how not in _HOWS:
            return f"join how must be 'latest' or 'interval', got {self.how!r}"
        durations = {
            "state_ttl_ms": self.state_ttl_ms,
            "wait_ms": self.wait_ms,
            "before_ms": self.before_ms,
            "after_ms": self.after_ms,
        }
        for name, value in durations.items():
            if isinstance(value, bool) or not isinstance(value, int):
                return f"join {name} must be whole milliseconds (an int), got {value!r}"
            if value < 0:
                return f"join {name} must be zero or more milliseconds, got {value}"
        if self.state_ttl_ms == 0:
            return "join state_ttl_ms must be more than 0: it bounds how long records are kept"
        if self.how == "interval" and self.wait_ms:
            return (
                f"join wait_ms applies to how='latest' only, got wait_ms={self.wait_ms} with "
                "how='interval': an interval join already waits for after_ms; drop wait_ms"
            )
        if self.how == "latest" and (self.before_ms or self.after_ms):
            return (
                "join before_ms and after_ms apply to how='interval' only, got "
                f"before_ms={self.before_ms}, after_ms={self.after_ms} with how='latest': "
                "drop them (a latest join takes the newest right at or before the left) or use "
                "how='interval'"
            )
        if self.how == "interval" and self.state_ttl_ms < self.before_ms:
            return (
                f"join state_ttl_ms ({self.state_ttl_ms}) is shorter than before_ms "
                f"({self.before_ms}): an interval join keeps rights for before_ms; raise "
                f"state_ttl_ms to {self.before_ms} or more"
            )
        return None


@dataclass(frozen=True, slots=True)
class SideRecord:
    """One event of either side, as the join keeps it.

    Attributes:
        time_ms: Its event time.
        event_id: Its id; a record with the same id replaces it.
        event_ts: Its event time as ISO-8601 text, kept verbatim for output rows.
        fields: The side's projected fields (a left's include the user id as ``user_id``).
    """

    time_ms: int
    event_id: str
    event_ts: str
    fields: dict[str, Any]

    def __reduce__(self) -> tuple[Any, ...]:
        # Flink pickles the state on every update: a plain tuple per record is far cheaper
        # than the default dataclass pickling.
        return (SideRecord, (self.time_ms, self.event_id, self.event_ts, self.fields))


def _key(record: SideRecord) -> tuple[int, str]:
    return (record.time_ms, record.event_id)


def _time(record: SideRecord) -> int:
    return record.time_ms


@dataclass
class JoinState:
    """The records held for one join key (kept in Flink keyed state, pickled).

    The lists belong to :class:`JoinLogic`: change them only through it, which keeps them
    sorted and their id indexes (not pickled, rebuilt on load) in step.

    Attributes:
        lefts: Left records not emitted yet, by (time, event id).
        rights: Right records that can still match a pending or future left, by (time, id).
    """

    lefts: list[SideRecord] = field(default_factory=list)
    rights: list[SideRecord] = field(default_factory=list)
    _left_ids: dict[str, SideRecord] = field(init=False, repr=False, compare=False)
    _right_ids: dict[str, SideRecord] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.lefts.sort(key=_key)
        self.rights.sort(key=_key)
        self._index()

    def __getstate__(self) -> tuple[list[SideRecord], list[SideRecord]]:
        return (self.lefts, self.rights)

    def __setstate__(self, state: tuple[list[SideRecord], list[SideRecord]]) -> None:
        self.lefts, self.rights = state
        self._index()

    def _index(self) -> None:
        self._left_ids = {r.event_id: r for r in self.lefts}
        self._right_ids = {r.event_id: r for r in self.rights}

    @property
    def is_empty(self) -> bool:
        """Nothing held: the operator can clear the key's state."""
        return not self.lefts and not self.rights


@dataclass(frozen=True)
class Joined:
    """One output: a left record and the right record it was joined with.

    Attributes:
        left: The left record.
        right: The matched right record; None when nothing matched (emitted with nulls).

    Example:
        >>> left = SideRecord(5_000, "w1", "1970-01-01T00:00:05.000Z", {"user_id": 7})
        >>> right = SideRecord(1_000, "u1", "1970-01-01T00:00:01.000Z", {"price": 90})
        >>> Joined(left, right).to_row(["price"], "interval")["event_id"]
        'w1~u1'
        >>> row = Joined(left, None).to_row(["price"], "latest")
        >>> list(row), row["event_id"], row["price"]
        (['user_id', 'event_id', 'event_ts', 'price', 'right_event_ts'], 'w1', None)

    """

    left: SideRecord
    right: SideRecord | None

    def to_row(self, right_fields: Sequence[str], how: str) -> dict[str, Any]:
        """The output row: the left's id, time and fields, then the right's fields and time.

        Its event time is the left's. Its id is the left's for a latest join (one output per
        left) and ``left~right`` for a matched interval pair (one output per pair).
        ``user_id``, ``event_id``, ``event_ts`` and ``right_event_ts`` win over any field of the
        same name.

        Args:
            right_fields: The right fields to output (null when unmatched or absent).
            how: The join's :attr:`JoinRules.how`.

        Raises:
            ValueError: When ``how`` is neither ``"latest"`` nor ``"interval"``.
            KeyError: When the left has no ``user_id`` field.

        """
        if how not in _HOWS:
            raise ValueError(f"join how must be 'latest' or 'interval', got {how!r}")
        left, right = self.left, self.right
        event_id = left.event_id
        if how == "interval" and right is not None:
            event_id = f"{left.event_id}~{right.event_id}"
        user_id = left.fields["user_id"]
        row: dict[str, Any] = {"user_id": user_id, "event_id": event_id, "event_ts": left.event_ts}
        row.update(left.fields)
        row.update({f: None if right is None else right.fields.get(f) for f in right_fields})
        # Reassigned, not re-added: a clashing field cannot move or replace them.
        row["user_id"], row["event_id"], row["event_ts"] = user_id, event_id, left.event_ts
        row["right_event_ts"] = None if right is None else right.event_ts
        return row


@dataclass(frozen=True)
class Fired:
    """What one :meth:`JoinLogic.fire` emitted.

    Attributes:
        joined: Outputs, by (left time, left id, right time, right id).
        dropped: Lefts without a match, by (time, id), when ``emit_missing`` is False.
    """

    joined: list[Joined]
    dropped: list[SideRecord]


class JoinLogic:
    """Applies left and right records and the watermark to one key's :class:`JoinState`.

    Args:
        rules: How to join.

    Example:
        A listing's price joined into a wishlist add (times in ms since the epoch):

        >>> logic, state = JoinLogic(JoinRules("latest", state_ttl_ms=3_600_000)), JoinState()
        >>> update = SideRecord(1_000, "u1", "1970-01-01T00:00:01.000Z", {"price": 90})
        >>> wish = SideRecord(5_000, "w1", "1970-01-01T00:00:05.000Z", {"user_id": 7})
        >>> logic.add_right(state, update, watermark=0), logic.add_left(state, wish, watermark=0)
        (True, True)
        >>> logic.deadline(state)  # a right at 5_000 or before could still come until then
        5001
        >>> logic.fire(state, 5_000).joined
        []
        >>> [row] = [j.to_row(["price"], "latest") for j in logic.fire(state, 5_001).joined]
        >>> row["event_id"], row["price"], row["right_event_ts"]
        ('w1', 90, '1970-01-01T00:00:01.000Z')
        >>> logic.add_left(state, wish, watermark=5_001)  # a replay of an emitted left is late
        False
        >>> logic.deadline(state)  # the update serves later lefts until its TTL runs out
        3601001
        >>> logic.fire(state, 3_601_001), state.is_empty
        (Fired(joined=[], dropped=[]), True)

    """

    def __init__(self, rules: JoinRules) -> None:
        self.rules = rules
        self._latest = rules.how == "latest"
        # How long a right before every pending left stays useful (see _prune); for an
        # interval join before_ms <= state_ttl_ms, so the TTL never cuts sooner.
        self._horizon = rules.state_ttl_ms if self._latest else rules.before_ms

    def add_left(self, state: JoinState, record: SideRecord, watermark: int) -> bool:
        """Hold a left record until :meth:`fire` emits it.

        Returns:
            False when it is late (before the watermark): nothing was applied.

        """
        if record.time_ms < watermark:
            return False
        _put(state.lefts, state._left_ids, record)
        return True

    def add_right(self, state: JoinState, record: SideRecord, watermark: int) -> bool:
        """Hold a right record while it can match a left, and drop those that no longer can.

        Returns:
            False when it is late (before the watermark): nothing was applied.

        """
        if record.time_ms < watermark:
            return False
        _put(state.rights, state._right_ids, record)
        self._prune(state, watermark)
        return True

    def fire(self, state: JoinState, watermark: int) -> Fired:
        """Emit every left that the watermark has made ready, then drop unneeded rights.

        A latest left at ``t`` is ready once the watermark passes ``t`` and it has a right at or
        before ``t``; else once it passes the first right within the wait, or the end of the
        wait. An interval left is ready once the watermark passes ``t + after_ms``.
        """
        rules, lefts = self.rules, state.lefts
        joined: list[Joined] = []
        dropped: list[SideRecord] = []
        # Ready lefts are a prefix (see _ready_at): stop at the first that must wait.
        ready = 0
        for left in lefts:
            matches = self._matches(state.rights, left, watermark)
            if matches is None:
                break
            ready += 1
            del state._left_ids[left.event_id]
            if matches:
                joined.extend(Joined(left, right) for right in matches)
            elif rules.emit_missing:
                joined.append(Joined(left, None))
            else:
                dropped.append(left)
        del lefts[:ready]
        self._prune(state, watermark)
        return Fired(joined, dropped)

    def deadline(self, state: JoinState) -> int | None:
        """The smallest watermark at which :meth:`fire` has work (the job's timer), if any.

        With lefts pending, the first one becomes ready; with only rights held, the newest
        stops being useful and firing empties the state. None when the state is empty.
        Recompute it after every add: a right can make a waiting left ready sooner.
        """
        if state.lefts:
            return self._ready_at(state.rights, state.lefts[0])
        if state.rights:
            return state.rights[-1].time_ms + self._horizon + 1
        return None

    def _newest_before(self, rights: list[SideRecord], t: int) -> SideRecord | None:
        """The newest right at or before ``t`` within the TTL (on equal times the largest id)."""
        position = bisect.bisect_right(rights, t, key=_time)
        if position and t - rights[position - 1].time_ms <= self.rules.state_ttl_ms:
            return rights[position - 1]
        return None

    def _first_after(self, rights: list[SideRecord], t: int) -> SideRecord | None:
        """The earliest right in ``(t, t + wait_ms]`` (on equal times the smallest id)."""
        position = bisect.bisect_right(rights, t, key=_time)
        if position < len(rights) and rights[position].time_ms <= t + self.rules.wait_ms:
            return rights[position]
        return None

    def _ready_at(self, rights: list[SideRecord], left: SideRecord) -> int:
        """The watermark at which a left becomes ready, given the rights held now.

        Never smaller for a later left, so the ready lefts are a prefix. (For latest: a right
        that makes a later left ready sooner is, for an earlier left, a right at or before it
        within the TTL, or within its wait, or after its wait ended.)
        """
        t = left.time_ms
        if not self._latest:
            return t + self.rules.after_ms + 1
        if not self.rules.wait_ms or self._newest_before(rights, t) is not None:
            return t + 1
        after = self._first_after(rights, t)
        # Every right before the watermark has arrived, so once the watermark passes a right in
        # the wait, no earlier one can come: no need to wait for the end.
        return t + self.rules.wait_ms + 1 if after is None else after.time_ms + 1

    def _matches(
        self, rights: list[SideRecord], left: SideRecord, watermark: int
    ) -> list[SideRecord] | None:
        """The rights a left is joined with; None while it must wait (see :meth:`_ready_at`)."""
        if watermark < self._ready_at(rights, left):
            return None
        t = left.time_ms
        if not self._latest:
            low = bisect.bisect_left(rights, t - self.rules.before_ms, key=_time)
            high = bisect.bisect_right(rights, t + self.rules.after_ms, key=_time)
            return rights[low:high]
        # Ready, so a right within the wait, if any, is before the watermark: all have come.
        chosen = self._newest_before(rights, t)
        if chosen is None and self.rules.wait_ms:
            chosen = self._first_after(rights, t)
        return [] if chosen is None else [chosen]

    def _prune(self, state: JoinState, watermark: int) -> None:
        """Drop the rights no pending or future left can match.

        Every pending left is at or after the oldest one, and every future left at or after
        the watermark (an earlier one is late), so all are at or after ``cut``.
        """
        rights = state.rights
        if not rights:
            return
        cut = min(watermark, state.lefts[0].time_ms) if state.lefts else watermark
        if self._latest:
            keep = bisect.bisect_left(rights, cut, key=_time)
            # Of the rights before the cut only the newest can still be "the latest" for a
            # left, and only while within the TTL.
            if keep and cut - rights[keep - 1].time_ms <= self._horizon:
                keep -= 1
        else:
            keep = bisect.bisect_left(rights, cut - self._horizon, key=_time)
        if keep:
            for record in rights[:keep]:
                del state._right_ids[record.event_id]
            del rights[:keep]


def _put(records: list[SideRecord], ids: dict[str, SideRecord], record: SideRecord) -> None:
    """Insert in (time, id) order, replacing a record with the same id (a replay)."""
    held = ids.get(record.event_id)
    if held is not None:
        del records[bisect.bisect_left(records, _key(held), key=_key)]
    bisect.insort(records, record, key=_key)
    ids[record.event_id] = record
