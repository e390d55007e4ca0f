"""Sessions: the query-time function and the streaming logic agree, on every timeline.

Timelines are drawn as ``HH:MM id`` on 2026-05-01 (UTC); ``gap`` and ``max`` are the spec.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usp_feast.sessions import (
    Session,
    SessionEvent,
    SessionLogic,
    SessionSpec,
    SessionState,
    sessionize,
)

pytestmark = pytest.mark.unit

DAY = datetime(2026, 5, 1, tzinfo=UTC)
GAP_30M = SessionSpec(gap=timedelta(minutes=30))


def at(clock: str) -> datetime:
    """``"10:25"`` or ``"10:29:59"`` on the test day, in UTC."""
    parts = [int(p) for p in clock.split(":")]
    return DAY.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0)


def ev(clock: str, event_id: str, signal: str = "view") -> SessionEvent:
    return SessionEvent(at(clock), signal, event_id, {})


def ids(sessions: list[Session]) -> list[tuple[str, ...]]:
    return [s.event_ids for s in sessions]


def streamed(events: list[SessionEvent], spec: SessionSpec) -> list[Session]:
    """Feed the events in the given order, close everything, newest first like ``sessionize``."""
    logic = SessionLogic(spec)
    for event in events:
        logic.add(event)
    return list(reversed(logic.close_all()))


# --- one session, boundaries -------------------------------------------------------------------


def test_events_closer_than_the_gap_form_one_session() -> None:
    # 10:00 a   10:10 b   10:25 c   (gap 30m)
    # -> one session a b c, 10:00 to 10:25
    events = [ev("10:00", "a"), ev("10:10", "b"), ev("10:25", "c")]

    [session] = sessionize(events, GAP_30M)

    assert session.event_ids == ("a", "b", "c")
    assert session.start == at("10:00")
    assert session.end == at("10:25")
    assert session.duration == timedelta(minutes=25)
    assert session.event_count == 3
    assert streamed(events, GAP_30M) == [session]


def test_events_exactly_a_gap_apart_are_in_different_sessions() -> None:
    # 10:00 a   10:30 b   (gap 30m)
    # [a, a+30m) does not overlap [b, b+30m) -> two sessions, newest first
    events = [ev("10:00", "a"), ev("10:30", "b")]

    assert ids(sessionize(events, GAP_30M)) == [("b",), ("a",)]
    assert ids(streamed(events, GAP_30M)) == [("b",), ("a",)]


def test_an_event_a_microsecond_inside_the_gap_joins_the_session() -> None:
    # 10:00 a   10:29:59.999999 b   (gap 30m)  -> one session
    just_inside = SessionEvent(at("10:30") - timedelta(microseconds=1), "view", "b", {})
    events = [ev("10:00", "a"), just_inside]

    assert ids(sessionize(events, GAP_30M)) == [("a", "b")]
    assert ids(streamed(events, GAP_30M)) == [("a", "b")]


def test_a_single_event_is_a_session_of_zero_duration() -> None:
    # 10:00 a   (gap 30m)
    [session] = sessionize([ev("10:00", "a")], GAP_30M)

    assert session.duration == timedelta(0)
    assert session.to_dict() == {
        "start": "2026-05-01T10:00:00Z",
        "end": "2026-05-01T10:00:00Z",
        "duration_s": 0.0,
        "event_count": 1,
        "signal_counts": {"view": 1},
        "event_ids": ["a"],
    }


def test_no_events_no_sessions() -> None:
    assert sessionize([], GAP_30M) == []
    assert SessionLogic(GAP_30M).close_all() == []


# --- late and out-of-order events --------------------------------------------------------------


def test_a_late_event_between_two_sessions_merges_them() -> None:
    # arrival: 10:00 a, 10:50 c, then 10:25 b (late)        (gap 30m)
    # before b: [a] [c]     (50m apart)
    # after b:  [a b c]     (b is 25m from both)
    logic = SessionLogic(GAP_30M)
    logic.add(ev("10:00", "a"))
    logic.add(ev("10:50", "c"))
    assert ids(logic.open_sessions()) == [("a",), ("c",)]

    merged = logic.add(ev("10:25", "b"))

    assert merged.event_ids == ("a", "b", "c")
    assert (merged.start, merged.end) == (at("10:00"), at("10:50"))
    assert logic.open_sessions() == [merged]


def test_a_late_event_touching_only_one_session_does_not_merge_the_other() -> None:
    # arrival: 10:00 a, 11:00 c, then 10:20 b (late)        (gap 30m)
    # b is 20m after a, 40m before c -> [a b] [c]
    logic = SessionLogic(GAP_30M)
    logic.add(ev("10:00", "a"))
    logic.add(ev("11:00", "c"))

    assert logic.add(ev("10:20", "b")).event_ids == ("a", "b")
    assert ids(logic.open_sessions()) == [("a", "b"), ("c",)]


def test_out_of_order_input_gives_the_same_sessions_newest_first() -> None:
    # 10:00 a   10:10 b   10:45 c   11:30 d   11:40 e   (gap 30m)
    # -> [d e] [c] [a b], newest first; input shuffled
    in_order = [ev("10:00", "a"), ev("10:10", "b"), ev("10:45", "c")]
    in_order += [ev("11:30", "d"), ev("11:40", "e")]
    shuffled = [in_order[i] for i in (3, 0, 4, 2, 1)]

    expected = [("d", "e"), ("c",), ("a", "b")]
    assert ids(sessionize(in_order, GAP_30M)) == expected
    assert ids(sessionize(shuffled, GAP_30M)) == expected
    assert ids(streamed(shuffled, GAP_30M)) == expected


def test_simultaneous_events_are_ordered_by_event_id() -> None:
    # 10:00 b, 10:00 a (same instant)   (gap 30m)  -> ids sorted for a stable order
    events = [ev("10:00", "b"), ev("10:00", "a")]

    assert ids(sessionize(events, GAP_30M)) == [("a", "b")]
    assert ids(streamed(events, GAP_30M)) == [("a", "b")]


def test_times_in_other_zones_are_reported_in_utc() -> None:
    # 12:00+02:00 a == 10:00Z   10:10Z b   (gap 30m)
    paris = SessionEvent(datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2))), "v", "a")

    [session] = sessionize([paris, ev("10:10", "b")], GAP_30M)

    assert session.start == at("10:00")
    assert session.to_dict()["start"] == "2026-05-01T10:00:00Z"


# --- max_length --------------------------------------------------------------------------------

GAP_30M_MAX_1H = SessionSpec(gap=timedelta(minutes=30), max_length=timedelta(hours=1))


def test_max_length_starts_a_new_session_once_an_event_is_that_far_from_the_start() -> None:
    # 10:00 a   10:20 b   10:40 c   11:00 d   11:20 e   (gap 30m, max 1h)
    # d is exactly 1h after a -> new session at d
    # -> [a b c] [d e]
    events = [ev("10:00", "a"), ev("10:20", "b"), ev("10:40", "c")]
    events += [ev("11:00", "d"), ev("11:20", "e")]

    assert ids(sessionize(events, GAP_30M_MAX_1H)) == [("d", "e"), ("a", "b", "c")]
    assert ids(streamed(events, GAP_30M_MAX_1H)) == [("d", "e"), ("a", "b", "c")]
    assert all(s.duration < timedelta(hours=1) for s in sessionize(events, GAP_30M_MAX_1H))


def test_a_late_event_before_the_start_moves_the_max_length_split() -> None:
    # arrival: 10:00 a, 10:25 b, 10:50 c, 11:10 d, then 09:45 z (late)   (gap 30m, max 1h)
    # before z:  [a b c] [d]        (d is 70m after a)
    # after z:   [z a b] [c d]      (c is 65m after z; the split is recomputed on sorted events)
    logic = SessionLogic(GAP_30M_MAX_1H)
    for event in [ev("10:00", "a"), ev("10:25", "b"), ev("10:50", "c"), ev("11:10", "d")]:
        logic.add(event)
    assert ids(logic.open_sessions()) == [("a", "b", "c"), ("d",)]

    holding_z = logic.add(ev("09:45", "z"))

    assert holding_z.event_ids == ("z", "a", "b")
    assert ids(logic.open_sessions()) == [("z", "a", "b"), ("c", "d")]
    everything = [ev("09:45", "z"), ev("10:00", "a"), ev("10:25", "b")]
    everything += [ev("10:50", "c"), ev("11:10", "d")]
    assert ids(sessionize(everything, GAP_30M_MAX_1H)) == [("c", "d"), ("z", "a", "b")]


# --- replays -----------------------------------------------------------------------------------


def test_a_replayed_event_id_is_counted_once() -> None:
    # 10:00 a   10:10 b   10:00 a (replay)   (gap 30m)  -> [a b], 2 events
    events = [ev("10:00", "a"), ev("10:10", "b"), ev("10:00", "a")]
    logic = SessionLogic(GAP_30M)
    logic.add(events[0])
    logic.add(events[1])

    after_replay = logic.add(events[2])

    assert after_replay.event_count == 2
    assert after_replay.event_ids == ("a", "b")
    assert [s.event_count for s in sessionize(events, GAP_30M)] == [2]


def test_when_replays_disagree_the_earliest_copy_wins_in_any_arrival_order() -> None:
    # x at 10:25 bridges a and c; its replay says 09:50      (gap 30m)
    #   with x@10:25: [a x c]
    #   with x@09:50: [x a] [c]    (c is 50m after a)
    # Dropping the later copy splits the session it was bridging.
    a, c = ev("10:00", "a"), ev("10:50", "c")
    late_copy, early_copy = ev("10:25", "x"), ev("09:50", "x")
    expected = [("c",), ("x", "a")]

    for order in ([a, late_copy, c, early_copy], [a, early_copy, c, late_copy]):
        assert ids(streamed(order, GAP_30M)) == expected
        assert ids(sessionize(order, GAP_30M)) == expected


# --- signals -----------------------------------------------------------------------------------


def test_events_are_counted_per_signal() -> None:
    # 10:00 a search   10:05 b view   10:07 c view   10:20 d booking   (gap 30m)
    events = [ev("10:00", "a", "search"), ev("10:05", "b", "view")]
    events += [ev("10:07", "c", "view"), ev("10:20", "d", "booking")]

    [session] = sessionize(events, GAP_30M)

    assert session.signal_counts == {"booking": 1, "search": 1, "view": 2}
    assert session.event_count == 4
    assert json.loads(json.dumps(session.to_dict()))["signal_counts"] == session.signal_counts


# --- closing on the watermark ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("watermark", "closed"),
    [
        (at("10:39:59"), False),  # before end + gap
        (at("10:40"), True),  # exactly end + gap: no later event can join any more
        (at("11:30"), True),  # well after
    ],
)
def test_close_until_closes_a_session_once_the_watermark_reaches_end_plus_gap(
    watermark: datetime, closed: bool
) -> None:
    # 10:00 a   10:10 b   (gap 30m)  -> session [a b] closable from 10:40
    logic = SessionLogic(GAP_30M)
    logic.add(ev("10:00", "a"))
    logic.add(ev("10:10", "b"))

    emitted = logic.close_until(watermark)

    assert ids(emitted) == ([("a", "b")] if closed else [])
    assert ids(logic.open_sessions()) == ([] if closed else [("a", "b")])


def test_close_until_returns_oldest_first_and_keeps_the_rest_open() -> None:
    # 10:00 a   10:40 b   11:20 c   (gap 30m), watermark 11:10
    # [a] closable at 10:30, [b] at 11:10, [c] at 11:50
    logic = SessionLogic(GAP_30M)
    for event in [ev("11:20", "c"), ev("10:00", "a"), ev("10:40", "b")]:
        logic.add(event)

    assert ids(logic.close_until(at("11:10"))) == [("a",), ("b",)]
    assert ids(logic.open_sessions()) == [("c",)]
    assert logic.close_until(at("11:10")) == []


def test_events_after_a_close_start_a_fresh_session() -> None:
    # 10:00 a | watermark 10:30 closes [a] | 10:45 b   (gap 30m)
    logic = SessionLogic(GAP_30M)
    logic.add(ev("10:00", "a"))
    assert ids(logic.close_until(at("10:30"))) == [("a",)]

    assert logic.add(ev("10:45", "b")).event_ids == ("b",)


# --- state -------------------------------------------------------------------------------------


def test_snapshot_and_restore_mid_stream_gives_the_same_final_sessions() -> None:
    # 10:00 a   10:10 b   | snapshot |   10:25 c   11:30 d   09:50 z (late)   (gap 30m, max 1h)
    first = [ev("10:00", "a"), ev("10:10", "b")]
    second = [ev("10:25", "c"), ev("11:30", "d"), ev("09:50", "z", "search")]
    uninterrupted = streamed(first + second, GAP_30M_MAX_1H)

    logic = SessionLogic(GAP_30M_MAX_1H)
    for event in first:
        logic.add(event)
    saved = json.dumps(logic.state.snapshot())  # must survive JSON, as Flink state would
    resumed = SessionLogic(GAP_30M_MAX_1H, SessionState.restore(json.loads(saved)))
    for event in second:
        resumed.add(event)

    assert list(reversed(resumed.close_all())) == uninterrupted
    assert ids(uninterrupted) == [("d",), ("z", "a", "b", "c")]


def test_restoring_keeps_replay_protection() -> None:
    # 10:00 a | snapshot | 10:00 a (replay)   (gap 30m)  -> still one event
    logic = SessionLogic(GAP_30M)
    logic.add(ev("10:00", "a"))
    resumed = SessionLogic(GAP_30M, SessionState.restore(logic.state.snapshot()))

    assert resumed.add(ev("10:00", "a")).event_count == 1


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2, "sessions": []},
        {"version": 1},
        {"version": 1, "sessions": [[]]},
        {"version": 1, "sessions": [[["not a time", "a", "view"]]]},
        {"version": 1, "sessions": [[["2026-05-01T10:00:00", "a", "view"]]]},  # naive
        {"version": 1, "sessions": [[["2026-05-01T10:00:00Z", "a"]]]},
    ],
)
def test_restoring_a_malformed_snapshot_says_so(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="cannot restore session state"):
        SessionState.restore(data)


# --- validation --------------------------------------------------------------------------------


def test_naive_event_times_are_rejected() -> None:
    with pytest.raises(ValueError, match="has no timezone"):
        SessionEvent(datetime(2026, 5, 1, 10), "view", "a", {})  # noqa: DTZ001


def test_a_naive_watermark_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"watermark .* has no timezone"):
        SessionLogic(GAP_30M).close_until(datetime(2026, 5, 1, 10))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gap": timedelta(0)}, "session gap must be longer than zero"),
        ({"gap": timedelta(minutes=-5)}, "session gap must be longer than zero"),
        ({"gap": 30}, "session gap must be a timedelta"),
        ({"gap": timedelta(minutes=30), "max_length": timedelta(0)}, "session max_length must"),
    ],
)
def test_a_spec_needs_positive_durations(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionSpec(**kwargs)  # type: ignore[arg-type]


# --- the two paths agree -----------------------------------------------------------------------

_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=6 * 60),  # minute of the event
        st.integers(min_value=0, max_value=12),  # id: a small pool, so replays happen
        st.sampled_from(["view", "search", "booking"]),
    ),
    max_size=40,
).map(
    lambda raw: [
        SessionEvent(DAY + timedelta(minutes=minute), signal, f"e{number}", {})
        for minute, number, signal in raw
    ]
)
_minutes = st.integers(min_value=1, max_value=180).map(lambda m: timedelta(minutes=m))
_specs = st.builds(SessionSpec, gap=_minutes, max_length=st.none() | _minutes)


@settings(max_examples=300, deadline=None)
@given(events=_events, spec=_specs, shuffle=st.randoms(use_true_random=False))
def test_sessionize_equals_streaming_the_events_in_any_order(
    events: list[SessionEvent], spec: SessionSpec, shuffle: random.Random
) -> None:
    arrival = list(events)
    shuffle.shuffle(arrival)
    logic = SessionLogic(spec)

    for count, event in enumerate(arrival, start=1):
        logic.add(event)
        # Not only at the end: the open sessions always equal sessionize of what was seen.
        assert logic.open_sessions() == list(reversed(sessionize(arrival[:count], spec)))

    assert list(reversed(logic.close_all())) == sessionize(events, spec)


@settings(max_examples=200, deadline=None)
@given(
    minutes=st.lists(st.integers(min_value=0, max_value=6 * 60), max_size=40),
    spec=_specs,
)
def test_closing_on_an_in_order_watermark_emits_exactly_the_sessions(
    minutes: list[int], spec: SessionSpec
) -> None:
    # Events arrive in time order; the watermark follows the latest event time.
    events = [
        SessionEvent(DAY + timedelta(minutes=m), "view", f"e{i}", {})
        for i, m in enumerate(sorted(minutes))
    ]
    logic = SessionLogic(spec)
    emitted: list[Session] = []

    for event in events:
        logic.add(event)
        emitted += logic.close_until(event.event_time)
    emitted += logic.close_all()

    assert list(reversed(emitted)) == sessionize(events, spec)
