"""Sliding windows: assignment, lateness, firing and serving on timelines.

Timelines are drawn as ``HH:MM`` on 2026-05-01 (UTC). Unless a test says otherwise windows are
10 minutes long every 5 minutes (``[10:00, 10:10)``, ``[10:05, 10:15)``, ...); ``wm`` is the
watermark handed to the logic.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.timeline import EPOCH, EVERYTHING, NO_WATERMARK, at
from usp_feast.aggregates import AggregateError, AggregateSpec, aggregate_all
from usp_feast.windows import (
    AddResult,
    ClosedWindow,
    SlidingWindowLogic,
    SlidingWindowSpec,
    WindowState,
    WindowValues,
)

pytestmark = pytest.mark.unit

TEN_EVERY_FIVE = SlidingWindowSpec(size=timedelta(minutes=10), step=timedelta(minutes=5))
ENGAGEMENT = [
    AggregateSpec.parse(text)
    for text in ("count", "top_k:city:2", "last_k:city:2", "first_ts", "last_ts", "duration")
]


def row(clock: str, city: str | None = None) -> dict[str, Any]:
    return {"event_ts": EPOCH + timedelta(milliseconds=at(clock)), "city": city}


def windows(result: AddResult | list[ClosedWindow]) -> list[tuple[int, int]]:
    items = result.updated if isinstance(result, AddResult) else result
    return [(w.start_ms, w.end_ms) for w in items]


def span(start: str, end: str) -> tuple[int, int]:
    return (at(start), at(end))


def feed(
    logic: SlidingWindowLogic, state: WindowState, clocks: list[str], wm: int = NO_WATERMARK
) -> None:
    for clock in clocks:
        assert not logic.add(state, row(clock, f"c{clock}"), at(clock), wm).late


# --- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "step", "lateness", "words"),
    [
        (timedelta(0), timedelta(minutes=5), timedelta(0), "longer than zero"),
        (timedelta(minutes=10), timedelta(0), timedelta(0), "longer than zero"),
        (timedelta(minutes=10), -timedelta(minutes=5), timedelta(0), "longer than zero"),
        (timedelta(minutes=10), timedelta(minutes=4), timedelta(0), "whole multiple of the step"),
        (timedelta(minutes=5), timedelta(minutes=10), timedelta(0), "whole multiple of the step"),
        (timedelta(minutes=10), timedelta(minutes=5), -timedelta(seconds=1), "must not be neg"),
        (timedelta(microseconds=1500), timedelta(microseconds=500), timedelta(0), "milliseconds"),
        (600, 300, timedelta(0), "must be a timedelta"),
    ],
)
def test_a_bad_spec_says_what_to_fix(size: Any, step: Any, lateness: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SlidingWindowSpec(size, step, lateness)


def test_tumbling_windows_are_sliding_windows_whose_step_is_their_size() -> None:
    tumbling = SlidingWindowSpec(timedelta(minutes=5), timedelta(minutes=5))

    assert tumbling.windows_for(at("10:07")) == [span("10:05", "10:10")]


def test_a_logic_needs_aggregates_with_distinct_result_keys() -> None:
    with pytest.raises(ValueError, match="at least one aggregate"):
        SlidingWindowLogic(TEN_EVERY_FIVE, [])
    top3, top5 = AggregateSpec.parse("top_k:city:3"), AggregateSpec.parse("top_k:city:5")
    with pytest.raises(ValueError, match="share the result key 'top_k_city'"):
        SlidingWindowLogic(TEN_EVERY_FIVE, [top3, top5])


# --- assignment --------------------------------------------------------------------------------


def test_an_event_on_a_step_boundary_opens_the_windows_starting_there() -> None:
    #        09:55          10:00          10:05          10:10          10:15
    #          [──────────────────────────────)                               not 10:05
    #                         [──────────────────────────────)                10:05 ✓
    #                                        [──────────────────────────────) 10:05 ✓
    assert TEN_EVERY_FIVE.windows_for(at("10:05")) == [
        span("10:00", "10:10"),
        span("10:05", "10:15"),
    ]
    # one millisecond earlier is still in the window ending at 10:05
    assert TEN_EVERY_FIVE.windows_for(at("10:04:59.999")) == [
        span("09:55", "10:05"),
        span("10:00", "10:10"),
    ]


def test_before_the_epoch_windows_still_hold_their_events() -> None:
    # floor modulo: -1 ms is in [-10m, 0) and [-5m, 5m), as Flink gives for t >= -step
    assert TEN_EVERY_FIVE.windows_for(-1) == [(-600_000, 0), (-300_000, 300_000)]


def test_with_10m_windows_every_5m_each_event_is_in_exactly_two() -> None:
    # 10:01 a   10:06 b   10:12 c
    #   [09:55, 10:05)  a
    #   [10:00, 10:10)  a b
    #   [10:05, 10:15)    b c
    #   [10:10, 10:20)      c
    logic, state = SlidingWindowLogic(TEN_EVERY_FIVE, ENGAGEMENT), WindowState()
    added = [logic.add(state, row(c, c), at(c), NO_WATERMARK) for c in ("10:01", "10:06", "10:12")]

    assert [len(result.updated) for result in added] == [2, 2, 2]
    assert windows(added[1]) == [span("10:00", "10:10"), span("10:05", "10:15")]
    assert added[1].updated[0].values["count"] == 2  # a and b
    assert {start: accs["count"].result() for start, accs in state.windows.items()} == {
        at("09:55"): 1,
        at("10:00"): 2,
        at("10:05"): 2,
        at("10:10"): 1,
    }


# --- out of order, firing, lateness ------------------------------------------------------------


def test_out_of_order_events_within_the_watermark_give_the_ordered_result() -> None:
    # arrival: 10:06 Rome, 10:01 Oslo, 10:03 Rome          (wm 10:00 throughout)
    # fire at wm 10:10 -> [10:00, 10:10): 3 events, 10:01 to 10:06
    logic, state = SlidingWindowLogic(TEN_EVERY_FIVE, ENGAGEMENT), WindowState()
    for clock, city in (("10:06", "Rome"), ("10:01", "Oslo"), ("10:03", "Rome")):
        logic.add(state, row(clock, city), at(clock), at("10:00"))

    fired = logic.fire(state, at("10:10"))

    assert windows(fired) == [span("09:55", "10:05"), span("10:00", "10:10")]
    assert fired[1] == ClosedWindow(
        at("10:00"),
        at("10:10"),
        {
            "count": 3,
            "top_k_city": [["Rome", 2], ["Oslo", 1]],
            "last_k_city": ["Rome", "Rome"],
            "first_ts": "2026-05-01T10:01:00.000Z",
            "last_ts": "2026-05-01T10:06:00.000Z",
            "duration": 300.0,
        },
        update=False,
    )


def test_each_window_fires_once_when_the_watermark_passes_its_end() -> None:
    # 10:01 a   10:06 b
    # wm 10:04:59.999  nothing ends yet
    # wm 10:05         [09:55, 10:05) fires
    # wm 10:05 again   nothing (fired already)
    # wm 10:20         [10:00, 10:10) and [10:05, 10:15) fire, each once
    logic, state = SlidingWindowLogic(TEN_EVERY_FIVE, ENGAGEMENT), WindowState()
    feed(logic, state, ["10:01", "10:06"])

    assert logic.fire(state, at("10:04:59.999")) == []
    assert windows(logic.fire(state, at("10:05"))) == [span("09:55", "10:05")]
    assert logic.fire(state, at("10:05")) == []
    later = logic.fire(state, at("10:20"))
    assert windows(later) == [span("10:00", "10:10"), span("10:05", "10:15")]
    assert [w.update for w in later] == [False, False]
    assert logic.fire(state, EVERYTHING) == []
    assert state.windows == {}


def test_an_event_within_the_allowed_lateness_updates_a_fired_window() -> None:
    # lateness 2m
    # 10:01 a, 10:06 b                        (wm 10:00)
    # fire wm 10:10: [09:55,10:05) a and [10:00,10:10) a b fire; [09:55,10:05) dropped (10:07)
    # 10:08 c arrives at wm 10:11: [10:00,10:10) is kept until 10:12 -> applied
    # fire wm 10:11: [10:00,10:10) fires again, update=True, a b c
    # 10:04 d arrives at wm 10:11:30: [09:55,10:05) dropped, [10:00,10:10) still open -> applied
    #   to that one only
    # 10:09 e arrives at wm 10:12: [10:00,10:10) is dropped at 10:12, [10:05,10:15) is open
    #   -> applied to that one only
    # 10:04 f arrives at wm 10:12: [09:55,10:05) and [10:00,10:10) both dropped -> late
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=2))
    logic, state = SlidingWindowLogic(spec, ENGAGEMENT), WindowState()
    feed(logic, state, ["10:01", "10:06"], wm=at("10:00"))

    first = logic.fire(state, at("10:10"))
    assert windows(first) == [span("09:55", "10:05"), span("10:00", "10:10")]
    assert sorted(state.windows) == [at("10:00"), at("10:05")]

    late_c = logic.add(state, row("10:08", "c"), at("10:08"), at("10:11"))
    assert windows(late_c) == [span("10:00", "10:10"), span("10:05", "10:15")]
    [again] = logic.fire(state, at("10:11"))
    assert (again.start_ms, again.update, again.values["count"]) == (at("10:00"), True, 3)

    late_d = logic.add(state, row("10:04", "d"), at("10:04"), at("10:11:30"))
    assert windows(late_d) == [span("10:00", "10:10")]

    late_e = logic.add(state, row("10:09", "e"), at("10:09"), at("10:12"))
    assert windows(late_e) == [span("10:05", "10:15")]

    before = state.snapshot()
    assert logic.add(state, row("10:04", "f"), at("10:04"), at("10:12")) == AddResult(late=True)
    assert state.snapshot() == before

    # wm 10:12: [10:00,10:10) fires its last update (d) and is dropped; nothing else is due
    [final] = logic.fire(state, at("10:12"))
    assert (final.start_ms, final.update, final.values["count"]) == (at("10:00"), True, 4)
    assert sorted(state.windows) == [at("10:05")]


def test_an_event_for_a_window_never_fired_fires_it_as_a_first_result() -> None:
    # lateness 5m; 10:01 a arrives at wm 10:06 -> [09:55,10:05) is closed but within lateness
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=5))
    logic, state = SlidingWindowLogic(spec, ENGAGEMENT), WindowState()
    logic.add(state, row("10:01", "a"), at("10:01"), at("10:06"))

    [closed] = logic.fire(state, at("10:06"))

    assert (closed.start_ms, closed.update) == (at("09:55"), False)


def test_deadline_is_the_next_end_to_fire_then_the_next_drop() -> None:
    # lateness 2m; 10:01 a -> ends 10:05 and 10:10
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=2))
    logic, state = SlidingWindowLogic(spec, ENGAGEMENT), WindowState()
    assert logic.deadline(state) is None

    feed(logic, state, ["10:01"])
    assert logic.deadline(state) == at("10:05")
    logic.fire(state, at("10:05"))
    assert logic.deadline(state) == at("10:07")  # [09:55,10:05) is dropped then
    logic.fire(state, at("10:07"))
    assert logic.deadline(state) == at("10:10")
    logic.fire(state, at("10:12"))
    assert logic.deadline(state) is None


def test_bad_event_data_changes_no_window() -> None:
    logic = SlidingWindowLogic(TEN_EVERY_FIVE, [AggregateSpec.parse("sum:guests")])
    state = WindowState()
    logic.add(state, {"guests": 2}, at("10:01"), NO_WATERMARK)
    before = state.snapshot()

    with pytest.raises(AggregateError, match="non-numeric value 'two'"):
        logic.add(state, {"guests": "two"}, at("10:06"), NO_WATERMARK)
    assert state.snapshot() == before


# --- serving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "count"),
    [
        ("10:01", 1),  # [09:55, 10:05): a
        ("10:04:59.999", 1),  # still [09:55, 10:05)
        ("10:05", 2),  # [10:00, 10:10): a b, the window ending at the next boundary
        ("10:07", 2),
        ("10:10", 1),  # [10:05, 10:15): b
        ("10:15", None),  # [10:10, 10:20): nothing
    ],
)
def test_current_serves_the_window_ending_at_the_next_step_boundary(
    now: str, count: int | None
) -> None:
    # 10:01 a   10:06 b
    #   [09:55, 10:05) a     [10:00, 10:10) a b     [10:05, 10:15) b
    logic, state = SlidingWindowLogic(TEN_EVERY_FIVE, ENGAGEMENT), WindowState()
    feed(logic, state, ["10:01", "10:06"])

    served = logic.current(state, at(now))

    assert (served or {}).get("count") == count


# --- state -------------------------------------------------------------------------------------


def test_a_snapshot_taken_mid_stream_resumes_to_the_same_results() -> None:
    # 10:01 10:03 10:06 | snapshot (wm 10:05 fired) | 10:08 10:11 10:02(late, lateness 3m)
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5), timedelta(minutes=3))
    logic = SlidingWindowLogic(spec, ENGAGEMENT)
    kept = WindowState()
    feed(logic, kept, ["10:01", "10:03", "10:06"], wm=at("10:00"))
    logic.fire(kept, at("10:05"))

    restored = WindowState.restore(json.loads(json.dumps(kept.snapshot())), logic.aggregates)
    assert restored.snapshot() == kept.snapshot()

    outputs = []
    for state in (kept, restored):
        feed(logic, state, ["10:08", "10:11", "10:02"], wm=at("10:06"))
        outputs.append((logic.fire(state, at("10:30")), state.snapshot()))
    assert outputs[0] == outputs[1]
    assert [w.update for w in outputs[0][0]] == [True, False, False, False]


def test_restore_refuses_another_version_or_other_aggregates() -> None:
    logic, state = SlidingWindowLogic(TEN_EVERY_FIVE, ENGAGEMENT), WindowState()
    feed(logic, state, ["10:01"])
    data = state.snapshot()

    with pytest.raises(ValueError, match="unknown window state version 7"):
        WindowState.restore({**data, "v": 7}, logic.aggregates)
    with pytest.raises(ValueError, match=r"no aggregate 'max:guests'.*start it from fresh state"):
        WindowState.restore(data, [AggregateSpec.parse("max:guests")])
    assert WindowState.restore(None, logic.aggregates) == WindowState()


# --- any arrival order agrees with batch aggregation ------------------------------------------

MINUTE = 60_000
EVENT_TIME = st.one_of(st.integers(0, 30 * MINUTE), st.integers(0, 6).map(lambda k: k * 5 * MINUTE))


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(EVENT_TIME, max_size=30),
    cities=st.lists(st.sampled_from(["Rome", "Oslo", "Lima", None]), min_size=30, max_size=30),
    data=st.data(),
)
def test_fired_windows_equal_batch_aggregates_in_any_arrival_order(
    times: list[int], cities: list[str | None], data: st.DataObject
) -> None:
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5))
    logic, state = SlidingWindowLogic(spec, ENGAGEMENT), WindowState()
    events = [
        (t, {"event_ts": EPOCH + timedelta(milliseconds=t), "city": city})
        for t, city in zip(times, cities, strict=False)
    ]
    arrival = data.draw(st.permutations(events))
    for t, fields in arrival:
        logic.add(state, fields, t, NO_WATERMARK)

    fired = logic.fire(state, EVERYTHING)

    expected = {}
    for t, _ in arrival:
        for start, end in spec.windows_for(t):
            # last_k ranks same-time events by arrival: give batch the arrival order too
            members = [fields for s, fields in arrival if start <= s < end]
            expected[(start, end)] = aggregate_all(ENGAGEMENT, members)
    assert {(w.start_ms, w.end_ms): w.values for w in fired} == expected
    assert len(fired) == len(expected) and not any(w.update for w in fired)
    assert state.windows == {} and logic.deadline(state) is None


def test_window_values_are_plain_records() -> None:
    values = WindowValues(0, 600_000, {"count": 1})

    assert ClosedWindow(0, 600_000, {"count": 1}) != values
    assert ClosedWindow(0, 600_000, {"count": 1}).update is False
