"""Session windows with aggregates, and what a reader is served, on timelines.

Timelines are drawn as ``HH:MM`` on 2026-05-01 (UTC). Unless a test says otherwise sessions end
after a 30-minute gap; ``wm`` is the watermark handed to the logic (Flink's plus one).
"""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.timeline import EPOCH, EVERYTHING, NO_WATERMARK, at
from usp_feast.aggregates import AggregateError, AggregateSpec, aggregate_all
from usp_feast.engagements import (
    Engagement,
    SessionWindowLogic,
    SessionWindowState,
    served,
    session_payload,
    window_payload,
)
from usp_feast.sessions import SessionEvent, SessionSpec, sessionize
from usp_feast.windows import SlidingWindowLogic, SlidingWindowSpec, WindowState

pytestmark = pytest.mark.unit

GAP = SessionSpec(gap=timedelta(minutes=30))
FEATURES = {
    "events": AggregateSpec.parse("count"),
    "top_cities": AggregateSpec.parse("top_k:city:2"),
    "cities": AggregateSpec.parse("count_distinct:city"),
    "duration_s": AggregateSpec.parse("duration"),
}


class Timeline:
    """One user's session logic fed events named by their clock time."""

    def __init__(
        self, spec: SessionSpec = GAP, lateness: timedelta = timedelta(0), features: Any = None
    ) -> None:
        self.logic = SessionWindowLogic(spec, features or FEATURES, lateness)
        self.state = SessionWindowState()
        self.watermark = NO_WATERMARK

    def add(self, clock: str, city: str = "Rome", event_id: str | None = None) -> Any:
        return self.logic.add(
            self.state,
            {"city": city},
            event_id or clock,
            "view",
            at(clock),
            self.watermark,
        )

    def feed(self, *clocks: str) -> None:
        for clock in clocks:
            assert not self.add(clock).late

    def fire(self, clock: str) -> list[Engagement]:
        self.watermark = at(clock)
        return self.logic.fire(self.state, self.watermark)

    def open_spans(self) -> list[tuple[int, int]]:
        return [(s.events[0].at_ms, s.events[-1].at_ms) for s in self.state.sessions]


def spans(engagements: list[Engagement]) -> list[tuple[int, int | None]]:
    return [(e.started_ms, e.last_event_ms) for e in engagements]


def span(first: str, last: str) -> tuple[int, int]:
    return (at(first), at(last))


# --- open sessions are served while open ------------------------------------------------------


def test_every_event_updates_the_current_session() -> None:
    timeline = Timeline()
    assert timeline.add("10:00", "Rome").current.values["events"] == 1

    current = timeline.add("10:10", "Oslo").current

    assert current.values == {
        "events": 2,
        "top_cities": [["Oslo", 1], ["Rome", 1]],
        "cities": 2,
        "duration_s": 600.0,
    }
    assert (current.started_ms, current.last_event_ms) == span("10:00", "10:10")
    assert current.expires_ms == at("10:40") and not current.closed


def test_a_session_is_served_until_its_gap_passes_then_not() -> None:
    timeline = Timeline()
    timeline.feed("10:00", "10:10")
    payload = session_payload(timeline.logic.current(timeline.state))

    assert served(payload, at("10:39:59.999")).values["events"] == 2
    assert served(payload, at("10:40")) is None


def test_max_length_caps_how_long_a_session_is_served() -> None:
    timeline = Timeline(SessionSpec(gap=timedelta(minutes=30), max_length=timedelta(hours=1)))
    timeline.feed("10:00", "10:25", "10:50")

    assert timeline.logic.current(timeline.state).expires_ms == at("11:00")


# --- closing -----------------------------------------------------------------------------------


def test_gap_exactly_at_the_boundary_starts_a_new_session() -> None:
    #  10:00 ── 10:29:59.999 (1 ms short of the gap: joins) ── 10:59:59.999 (the gap: new)
    timeline = Timeline()
    timeline.feed("10:00", "10:29:59.999", "10:59:59.999")

    assert timeline.open_spans() == [
        span("10:00", "10:29:59.999"),
        span("10:59:59.999", "10:59:59.999"),
    ]


def test_a_session_closes_once_when_the_watermark_reaches_last_event_plus_gap() -> None:
    timeline = Timeline()
    timeline.feed("10:00", "10:10")

    assert timeline.fire("10:39:59.999") == []
    assert timeline.logic.deadline(timeline.state) == at("10:40")
    [summary] = timeline.fire("10:40")

    assert spans([summary]) == [span("10:00", "10:10")]
    assert summary.closed and not summary.update and summary.values["events"] == 2
    assert timeline.fire("12:00") == [] and timeline.state.sessions == []


def test_max_length_splits_a_busy_session() -> None:
    # every 20 min from 10:00; a 1h cap cuts at 11:00, then 12:00
    timeline = Timeline(SessionSpec(gap=timedelta(minutes=30), max_length=timedelta(hours=1)))
    timeline.feed("10:00", "10:20", "10:40", "11:00", "11:20", "11:40", "12:00")

    assert timeline.open_spans() == [
        span("10:00", "10:40"),
        span("11:00", "11:40"),
        span("12:00", "12:00"),
    ]


# --- out of order and late ---------------------------------------------------------------------


def test_a_late_event_between_two_sessions_merges_them() -> None:
    #  10:00 10:20          10:45           11:10
    #  [─── a ───]   gap    [──── b ───]
    #                  ↑ 10:40 arrives last: closer than 30m to both, so one session
    timeline = Timeline()
    timeline.feed("10:00", "10:20", "11:00", "11:10")
    assert len(timeline.state.sessions) == 2

    current = timeline.add("10:40").current

    assert timeline.open_spans() == [span("10:00", "11:10")]
    assert current.values["events"] == 5 and current.started_ms == at("10:00")


def test_a_late_event_moves_a_max_length_cut() -> None:
    # In order 10:10 10:35 11:00 with a 1h cap are one session; 09:55 arriving last starts it
    # earlier, so 11:00 is now past the cap and starts the next session.
    timeline = Timeline(SessionSpec(gap=timedelta(minutes=30), max_length=timedelta(hours=1)))
    timeline.feed("10:10", "10:35", "11:00")
    assert timeline.open_spans() == [span("10:10", "11:00")]
    timeline.feed("09:55")

    assert timeline.open_spans() == [span("09:55", "10:35"), span("11:00", "11:00")]


def test_within_allowed_lateness_a_closed_session_fires_again_as_an_update() -> None:
    timeline = Timeline(lateness=timedelta(minutes=5))
    timeline.feed("10:00", "10:10")
    [first] = timeline.fire("10:42")
    assert timeline.logic.deadline(timeline.state) == at("10:45")

    timeline.feed("10:05")
    [again] = timeline.fire("10:43")

    assert (first.values["events"], again.values["events"]) == (2, 3)
    assert again.update and again.closed and again.started_ms == first.started_ms
    assert again.to_row("s", 1)["event_id"] == first.to_row("s", 1)["event_id"]


def test_an_event_beyond_the_allowed_lateness_is_late_and_not_applied() -> None:
    timeline = Timeline(lateness=timedelta(minutes=5))
    timeline.feed("10:00")
    timeline.fire("10:35")  # forgets the session: 10:00 + 30m + 5m

    result = timeline.add("10:00", event_id="again")

    assert result.late and timeline.state.sessions == [] and timeline.state.ids == {}
    assert not timeline.add("10:00:00.001").late  # its own session is within lateness


def test_an_event_joining_a_session_within_lateness_is_applied() -> None:
    # 10:05 alone would be forgotten at 10:40, but it falls inside 10:00-10:10, kept to 10:45
    timeline = Timeline(lateness=timedelta(minutes=5))
    timeline.feed("10:00", "10:10")
    timeline.fire("10:42")

    assert not timeline.add("10:05").late
    assert timeline.add("09:59", event_id="early").late is False  # joins at the front


def test_a_replayed_event_counts_once_and_the_earliest_copy_wins() -> None:
    timeline = Timeline()
    timeline.feed("10:00")
    timeline.add("10:20", event_id="x")
    assert timeline.add("10:20", event_id="x").current.values["events"] == 2  # replay
    # An earlier copy of x at 09:00 replaces the 10:20 one: two sessions now.
    timeline.add("09:00", event_id="x")

    assert timeline.open_spans() == [span("09:00", "09:00"), span("10:00", "10:00")]
    assert timeline.state.event_count == 2


def test_bad_data_changes_nothing() -> None:
    timeline = Timeline(features={"total": AggregateSpec.parse("sum:price")})
    timeline.logic.add(timeline.state, {"price": 10}, "a", "view", at("10:00"), NO_WATERMARK)
    before = pickle.dumps(timeline.state)

    with pytest.raises(AggregateError, match="non-numeric value 'cheap'"):
        timeline.logic.add(
            timeline.state, {"price": "cheap"}, "b", "view", at("10:01"), NO_WATERMARK
        )
    assert pickle.dumps(timeline.state) == before


def test_the_state_survives_pickling_as_flink_keeps_it() -> None:
    timeline = Timeline()
    timeline.feed("10:00", "10:10")
    restored = pickle.loads(pickle.dumps(timeline.state))

    timeline.feed("10:20")
    timeline.logic.add(restored, {"city": "Rome"}, "10:20", "view", at("10:20"), NO_WATERMARK)

    assert timeline.logic.fire(restored, EVERYTHING) == timeline.fire("23:00")


def test_a_logic_needs_aggregates_and_a_sane_lateness() -> None:
    with pytest.raises(ValueError, match="at least one aggregate"):
        SessionWindowLogic(GAP, {})
    with pytest.raises(ValueError, match="allowed_lateness"):
        SessionWindowLogic(GAP, FEATURES, timedelta(minutes=-1))


# --- any arrival order agrees with batch sessionizing -----------------------------------------

MINUTE = 60_000
TIMES = st.one_of(st.integers(0, 240 * MINUTE), st.integers(0, 16).map(lambda k: k * 15 * MINUTE))


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(TIMES, max_size=25),
    cities=st.lists(st.sampled_from(["Rome", "Oslo", "Lima"]), min_size=25, max_size=25),
    capped=st.booleans(),
    data=st.data(),
)
def test_closed_sessions_equal_batch_sessions_in_any_arrival_order(
    times: list[int], cities: list[str], capped: bool, data: st.DataObject
) -> None:
    spec = SessionSpec(gap=timedelta(minutes=30), max_length=timedelta(hours=1) if capped else None)
    logic, state = SessionWindowLogic(spec, FEATURES), SessionWindowState()
    events = [(t, f"e{i}", city) for i, (t, city) in enumerate(zip(times, cities, strict=False))]
    for t, event_id, city in data.draw(st.permutations(events)):
        logic.add(state, {"city": city}, event_id, "view", t, NO_WATERMARK)

    fired = logic.fire(state, EVERYTHING)

    batch = sessionize(
        [SessionEvent(EPOCH + timedelta(milliseconds=t), "view", i, {}) for t, i, _ in events],
        spec,
    )
    by_id = {i: (t, city) for t, i, city in events}
    expected = []
    for session in reversed(batch):
        rows = [
            {"city": by_id[i][1], "event_ts": EPOCH + timedelta(milliseconds=by_id[i][0])}
            for i in session.event_ids
        ]
        first = (session.start - EPOCH) // timedelta(milliseconds=1)
        expected.append(
            (
                first,
                dict(zip(FEATURES, aggregate_all(FEATURES.values(), rows).values(), strict=True)),
            )
        )
    assert [(e.started_ms, e.values) for e in fired] == expected
    assert state.sessions == [] and state.ids == {}


# --- sliding windows: what the store keeps and serves -----------------------------------------


def test_a_window_payload_serves_the_last_ten_minutes_across_step_boundaries() -> None:
    #  10:00      10:05      10:10      10:15      10:20
    #    [────────────────────)                             holds 10:03, 10:07
    #               [────────────────────)                  holds 10:07
    spec = SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5))
    logic, state = SlidingWindowLogic(spec, {"views": AggregateSpec.parse("count")}), WindowState()
    logic.add(state, {}, at("10:03"), NO_WATERMARK)
    logic.add(state, {}, at("10:07"), NO_WATERMARK)

    payload = window_payload(logic, state, at("10:07"))

    assert payload is not None and payload["expires"] == at("10:15")
    assert served(payload, at("10:07")).values == {"views": 2}
    assert served(payload, at("10:10")).values == {"views": 1}
    assert served(payload, at("10:14:59.999")).started_ms == at("10:05")
    assert served(payload, at("10:15")) is None
    assert window_payload(logic, state, at("10:15")) is None
