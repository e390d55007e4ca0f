"""Segment membership: the pure state machine on timelines.

Timelines are drawn in days (``d3`` = day 3 at 00:00) or ``d3+5m``; the default rules are the
example segment's: enter on ``search``, 14 days, reset on each search, exit on ``booking``.
"""

from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usp_feast.filters import parse_filter
from usp_feast.segments import (
    MembershipChange,
    MembershipState,
    SegmentEvent,
    SegmentLogic,
    SegmentRules,
    SignalCondition,
    is_member,
    iso_ms,
    replay,
    row_event_ms,
)

pytestmark = pytest.mark.unit

DAY = 86_400_000
MINUTE = 60_000
TRIP_PLANNER = SegmentRules(
    trigger=SignalCondition("search"),
    exits=(SignalCondition("booking"),),
    expires_after=timedelta(days=14),
)


def d(day: float, minutes: int = 0) -> int:
    return int(day * DAY) + minutes * MINUTE


def search(day: float, event_id: str, **fields: object) -> SegmentEvent:
    return SegmentEvent("search", event_id, d(day), fields)


def booking(day: float, event_id: str) -> SegmentEvent:
    return SegmentEvent("booking", event_id, d(day))


def summary(changes: list[MembershipChange]) -> list[tuple[str, str, int, bool, int, int]]:
    """(change, cause, at, in_segment, entered_at, expires_at) per change, in days."""
    return [
        (
            c.change,
            c.cause,
            c.at_ms / DAY,
            c.in_segment,
            c.entered_at_ms / DAY,
            c.expires_at_ms / DAY,
        )
        for c in changes
    ]


def test_enter_then_expire_exactly_at_14_days() -> None:
    # d0 search ──────────── 14 days ────────────▶ d14 expired (not one millisecond earlier)
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()

    entered = logic.on_event(state, search(0, "s1"))
    assert summary(entered) == [("entered", "s1", 0, True, 0, 14)]
    assert logic.deadline(state) == d(14)
    assert logic.advance(state, d(14) - 1) == []
    assert is_member(True, d(14), d(14) - 1) and not is_member(True, d(14), d(14))

    expired = logic.advance(state, d(14))
    assert summary(expired) == [("expired", "expiry:0", 14, False, 0, 14)]
    assert expired[0].reason == "no search for 2w"
    assert state.status == "out" and logic.deadline(state) is None


def test_retrigger_on_day_13_extends_to_day_27() -> None:
    # d0 search ─ d13 search (renewed) ─ d14 still in ─ d27 expired
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(0, "s1"))

    renewed = logic.on_event(state, search(13, "s2"))

    assert summary(renewed) == [("renewed", "s2", 13, True, 0, 27)]
    assert logic.advance(state, d(14)) == []
    assert summary(logic.advance(state, d(27))) == [("expired", "expiry:0", 27, False, 0, 27)]


def test_booking_on_day_3_exits() -> None:
    # d0 search ─ d3 booking (exited) ─ d14 nothing left to expire
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(0, "s1"))

    exited = logic.on_event(state, booking(3, "b1"))

    assert summary(exited) == [("exited", "b1", 3, False, 0, 3)]
    assert exited[0].reason == "exit on booking"
    assert logic.deadline(state) is None
    assert logic.advance(state, d(14)) == []


def test_exit_then_reenter() -> None:
    # d0 search ─ d3 booking ─ d5 search: a new membership from d5 to d19
    _, changes = replay(
        SegmentLogic(TRIP_PLANNER), [search(0, "s1"), booking(3, "b1"), search(5, "s2")]
    )
    assert summary(changes) == [
        ("entered", "s1", 0, True, 0, 14),
        ("exited", "b1", 3, False, 0, 3),
        ("entered", "s2", 5, True, 5, 19),
    ]


def test_cooldown_blocks_reentry_until_it_has_passed() -> None:
    # cooldown 7d: d0 search ─ d3 booking ─ d5 search (ignored) ─ d10 search (enters)
    rules = SegmentRules(**{**TRIP_PLANNER.__dict__, "cooldown": timedelta(days=7)})
    logic, state = SegmentLogic(rules), MembershipState()
    logic.on_event(state, search(0, "s1"))
    logic.on_event(state, booking(3, "b1"))

    assert logic.on_event(state, search(5, "s2")) == []
    assert logic.on_event(state, search(9.99, "s3")) == []
    assert summary(logic.on_event(state, search(10, "s4"))) == [("entered", "s4", 10, True, 10, 24)]


def test_cooldown_also_follows_an_expiry() -> None:
    rules = SegmentRules(**{**TRIP_PLANNER.__dict__, "cooldown": timedelta(days=2)})
    _, changes = replay(SegmentLogic(rules), [search(0, "s1"), search(15, "s2"), search(16, "s3")])
    assert [c.change for c in changes] == ["entered", "expired", "entered"]
    assert changes[-1].cause == "s3"


def test_out_of_order_exit_before_its_trigger_records_the_short_membership() -> None:
    # event time:  d1 search ── d2 booking
    # arrival:     booking first (nothing to exit), then the search
    # outcome as in event-time order: entered d1, exited d2, and the user is outside
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()

    assert logic.on_event(state, booking(2, "b1")) == []
    late = logic.on_event(state, search(1, "s1"))

    assert summary(late) == [
        ("entered", "s1", 1, True, 1, 15),
        ("exited", "b1", 2, False, 1, 2),
    ]
    assert state.status == "out"
    _, in_order = replay(logic, [search(1, "s1"), booking(2, "b1")])
    assert summary(in_order) == summary(late)


def test_out_of_order_stale_exit_does_not_end_a_later_membership() -> None:
    # event time: d1 booking ── d2 search;  arrival: search first, then the older booking
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(2, "s1"))

    assert logic.on_event(state, booking(1, "b1")) == []
    assert state.status == "in" and state.entered_at == d(2)


def test_late_trigger_moves_the_entry_earlier_when_it_chains() -> None:
    # event time: d1 search, d3 search; arrival: d3 first → entered d3, then d1 → entered d1
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(3, "s2"))

    assert summary(logic.on_event(state, search(1, "s1"))) == [("entered", "s1", 1, True, 1, 17)]
    assert state.expires_at == d(17)


def test_start_delay_enters_later_and_an_exit_first_cancels() -> None:
    # start delay 1h: d0 search → entered at d0+1h; d1 search, d1+30m booking → never entered
    rules = SegmentRules(**{**TRIP_PLANNER.__dict__, "start_delay": timedelta(hours=1)})
    logic, state = SegmentLogic(rules), MembershipState()
    assert logic.on_event(state, search(0, "s1")) == []
    assert state.status == "pending" and logic.deadline(state) == d(0, 60)
    started = logic.advance(state, d(0, 60))
    assert summary(started) == [("entered", "start:s1", d(0, 60) / DAY, True, d(0, 60) / DAY, 14)]

    other, other_state = SegmentLogic(rules), MembershipState()
    other.on_event(other_state, search(1, "s2"))
    assert other.on_event(other_state, booking(1 + 30 / 1440, "b1")) == []
    assert other.advance(other_state, d(2)) == []
    assert other_state.status == "out"


def test_max_membership_caps_renewals() -> None:
    # max 20d: d0 search, d13 search would run to d27, but membership ends at d20
    rules = SegmentRules(**{**TRIP_PLANNER.__dict__, "max_membership": timedelta(days=20)})
    logic, state = SegmentLogic(rules), MembershipState()
    logic.on_event(state, search(0, "s1"))
    assert summary(logic.on_event(state, search(13, "s2"))) == [("renewed", "s2", 13, True, 0, 20)]
    assert logic.on_event(state, search(19, "s3")) == []  # nothing left to extend
    expired = logic.advance(state, d(20))
    assert expired[0].reason == "maximum membership of 20d reached"


def test_trigger_predicate_filters_on_signal_fields() -> None:
    rules = SegmentRules(
        trigger=SignalCondition("search", parse_filter("guests >= 2")),
        exits=(SignalCondition("booking"),),
        expires_after=timedelta(days=14),
    )
    logic, state = SegmentLogic(rules), MembershipState()
    assert logic.on_event(state, search(0, "s1", guests=1)) == []
    assert [c.change for c in logic.on_event(state, search(1, "s2", guests=3))] == ["entered"]
    assert rules.describe() == (
        "enter on search where guests >= 2, leave on booking or after 2w without search"
    )


def test_an_exit_after_the_planned_expiry_expires_first() -> None:
    # the job's timer has not fired yet when a d20 booking arrives: d14 expiry comes first
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(0, "s1"))
    assert [c.change for c in logic.on_event(state, booking(20, "b1"))] == ["expired"]


def test_state_survives_a_snapshot_round_trip_between_entry_and_expiry() -> None:
    # a restart between entry and expiry: the restored state still expires on time
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(0, "s1"))
    logic.on_event(state, booking(-1, "b0"))  # remembered as an exit that ended nothing

    restored = MembershipState.restore(json.loads(json.dumps(state.snapshot())))

    assert restored == state
    assert logic.deadline(restored) == d(14)
    assert [c.change for c in logic.advance(restored, d(14))] == ["expired"]
    with pytest.raises(ValueError, match="unknown segment state version"):
        MembershipState.restore({"v": 99})


def test_replaying_the_same_events_gives_the_same_causes() -> None:
    events = [search(0, "s1"), search(13, "s2"), booking(20, "b1"), search(30, "s3")]
    first = replay(SegmentLogic(TRIP_PLANNER), events, d(60))[1]
    second = replay(SegmentLogic(TRIP_PLANNER), events, d(60))[1]
    assert first == second
    causes = [c.cause for c in first]
    assert len(causes) == len(set(causes))  # one stored record per change


def test_change_dict_is_what_the_segment_topic_carries() -> None:
    change = replay(SegmentLogic(TRIP_PLANNER), [search(0, "s1")])[1][0]
    assert change.to_dict("trip", "42") == {
        "segment": "trip",
        "user_id": "42",
        "change": "entered",
        "event_id": "s1",
        "event_ts": "1970-01-01T00:00:00.000Z",
        "in_segment": True,
        "entered_at": "1970-01-01T00:00:00.000Z",
        "expires_at": iso_ms(d(14)),
        "reason": "trigger search",
    }
    assert row_event_ms(change.to_row("trip", "42")) == 0
    later = replay(SegmentLogic(TRIP_PLANNER), [search(3, "s1")])[1][0]
    assert row_event_ms(later.to_row("trip", "42")) == d(3)


def test_rules_reject_a_start_delay_not_shorter_than_the_expiry() -> None:
    with pytest.raises(ValueError, match="expires_after must be longer than start_delay"):
        SegmentRules(
            trigger=SignalCondition("search"),
            expires_after=timedelta(hours=1),
            start_delay=timedelta(hours=1),
        )


# Without a cooldown, a start delay or a maximum, membership does not depend on the order
# events arrive in: at the newest event's time, and after the expiry that follows, every
# arrival order ends as event-time order does.
timed_events = st.lists(
    st.tuples(st.sampled_from(["search", "booking"]), st.integers(0, 80)),
    min_size=1,
    max_size=7,
    unique_by=lambda e: e[1],
)


@settings(max_examples=400, deadline=None)
@given(timed_events, st.randoms(use_true_random=False))
def test_membership_is_the_same_in_any_arrival_order(events, rng) -> None:
    # times in quarter days over 20 days, so gaps both shorter and longer than 14 days occur
    timeline = [SegmentEvent(kind, f"{kind}{t}", t * DAY // 4) for kind, t in events]
    newest = max(e.at_ms for e in timeline)
    shuffled = timeline[:]
    rng.shuffle(shuffled)
    for until in (newest, newest + d(14)):
        ordered, _ = replay(
            SegmentLogic(TRIP_PLANNER), sorted(timeline, key=lambda e: e.at_ms), until
        )
        arrived, _ = replay(SegmentLogic(TRIP_PLANNER), shuffled, until)
        assert (arrived.status, arrived.expires_at) == (ordered.status, ordered.expires_at)


def test_an_exit_older_than_a_seen_trigger_exits_and_reenters() -> None:
    # event time: d0 search, d1 booking, d2 search; arrival: d0, d2, then the d1 booking
    logic, state = SegmentLogic(TRIP_PLANNER), MembershipState()
    logic.on_event(state, search(0, "s0"))
    logic.on_event(state, search(2, "s2"))

    assert summary(logic.on_event(state, booking(1, "b1"))) == [
        ("exited", "b1", 1, False, 0, 1),
        ("entered", "s2", 2, True, 2, 16),
    ]


def test_every_two_event_order_agrees_on_membership_history() -> None:
    # For two events, arrival order does not change what history says at any time either.
    pairs = [(search(1, "s1"), booking(2, "b1")), (booking(1, "b1"), search(2, "s1"))]
    for pair in pairs:
        histories = set()
        for order in itertools.permutations(pair):
            _, changes = replay(SegmentLogic(TRIP_PLANNER), list(order), d(30))
            histories.add(tuple(sorted(summary(changes), key=lambda c: (c[2], c[0]))))
        assert len(histories) == 1, histories
