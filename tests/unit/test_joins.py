"""Stream-stream joins on timelines: wishlist adds (left) enriched with listing updates (right).

Timelines are drawn as ``HH:MM`` on 2026-05-01 (UTC), lefts above the line (``w1`` ...) and
rights below it (``u1`` ... with the listing's price); ``wm`` is the watermark handed to the
logic (everything before it has arrived).
"""

from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.timeline import EVERYTHING, NO_WATERMARK, at
from usp_feast.joins import Fired, Joined, JoinLogic, JoinRules, JoinState, SideRecord
from usp_feast.segments import iso_ms

pytestmark = pytest.mark.unit

HOUR = 3_600_000
LATEST = JoinRules("latest", state_ttl_ms=24 * HOUR)


def wish(clock: str, event_id: str, user_id: int = 7) -> SideRecord:
    return SideRecord(at(clock), event_id, iso_ms(at(clock)), {"user_id": user_id, "listing_id": 1})


def update(clock: str, event_id: str, price: int) -> SideRecord:
    return SideRecord(at(clock), event_id, iso_ms(at(clock)), {"price": price, "title": "Loft"})


class Timeline:
    """One listing's join state, fed wishlist adds and listing updates by clock time."""

    def __init__(self, rules: JoinRules = LATEST) -> None:
        self.logic = JoinLogic(rules)
        self.state = JoinState()
        self.watermark = NO_WATERMARK

    def left(self, clock: str, event_id: str) -> bool:
        return self.logic.add_left(self.state, wish(clock, event_id), self.watermark)

    def right(self, clock: str, event_id: str, price: int = 100) -> bool:
        return self.logic.add_right(self.state, update(clock, event_id, price), self.watermark)

    def fire(self, clock: str) -> Fired:
        self.watermark = at(clock)
        return self.logic.fire(self.state, self.watermark)

    def pairs(self, clock: str) -> list[tuple[str, str | None]]:
        """Fire at ``clock``: (left id, right id or None) of each output."""
        return pairs(self.fire(clock))

    def deadline(self) -> int | None:
        return self.logic.deadline(self.state)


def pairs(fired: Fired) -> list[tuple[str, str | None]]:
    return [(j.left.event_id, j.right and j.right.event_id) for j in fired.joined]


def held(state: JoinState) -> tuple[list[str], list[str]]:
    return [r.event_id for r in state.lefts], [r.event_id for r in state.rights]


# --- latest: each left gets the right valid at its time -------------------------------------


def test_a_left_before_any_right_is_emitted_with_nulls_once_the_watermark_passes_it() -> None:
    #        10:00 w1
    #  ────────┼──────────┼─────
    #                   10:05 u1 (too new for w1: it changed the listing after the add)
    timeline = Timeline()
    assert timeline.left("10:00", "w1")
    assert timeline.right("10:05", "u1", 90)

    assert timeline.pairs("10:00") == []  # a right at 10:00 could still come
    assert timeline.deadline() == at("10:00:00.001")
    assert timeline.pairs("10:00:00.001") == [("w1", None)]
    assert timeline.pairs("23:00") == []


def test_a_right_before_the_left_enriches_it() -> None:
    #                 10:00 w1 → u1 (90)
    #  ──────┼──────────┼─────
    #      09:00 u1 (90)
    timeline = Timeline()
    timeline.right("09:00", "u1", 90)
    timeline.left("10:00", "w1")

    [joined] = timeline.fire("10:00:00.001").joined

    assert joined.right is not None and joined.right.fields["price"] == 90
    assert held(timeline.state) == ([], ["u1"])  # u1 still serves later adds


def test_each_left_gets_the_version_valid_at_its_time() -> None:
    #          09:30 w1 → u1    10:00 w2 → u2 (same time applies)   10:30 w3 → u2
    #  ────┼─────┼───────────┼───────────────────────────────────────┼─────
    #   09:00 u1 (90)     10:00 u2 (80)
    timeline = Timeline()
    timeline.right("09:00", "u1", 90)
    timeline.right("10:00", "u2", 80)
    for clock, event_id in [("10:30", "w3"), ("09:30", "w1"), ("10:00", "w2")]:
        timeline.left(clock, event_id)

    fired = timeline.fire("11:00")

    assert pairs(fired) == [("w1", "u1"), ("w2", "u2"), ("w3", "u2")]  # in left-time order
    assert [j.right and j.right.fields["price"] for j in fired.joined] == [90, 80, 80]


def test_two_rights_at_the_same_time_the_largest_id_wins() -> None:
    timeline = Timeline()
    timeline.right("09:00", "u-b", 2)
    timeline.right("09:00", "u-a", 1)
    timeline.left("10:00", "w1")

    assert timeline.pairs("10:00:00.001") == [("w1", "u-b")]
    assert held(timeline.state) == ([], ["u-b"])  # u-a can never be the latest again


def test_a_right_arriving_after_the_left_but_before_the_watermark_passes_it_is_used() -> None:
    #  arrival:   w1 (10:00), wm 09:50, u1 (09:55) arrives late but within the bound
    #                   10:00 w1 → u1
    #  ──────────┼────────┼─────
    #      wm 09:50  09:55 u1
    timeline = Timeline()
    timeline.fire("09:50")
    timeline.left("10:00", "w1")
    assert timeline.deadline() == at("10:00:00.001")

    assert timeline.right("09:55", "u1", 90)

    assert timeline.pairs("10:00:00.001") == [("w1", "u1")]


def test_events_before_the_watermark_are_late_and_change_nothing() -> None:
    #  wm 10:00: w0 (09:59) and u0 (09:59:59.999) are late; events at 10:00 are not
    timeline = Timeline()
    timeline.right("09:00", "u1")
    timeline.left("10:30", "w1")
    timeline.fire("10:00")
    before = pickle.dumps(timeline.state)

    assert not timeline.left("09:59", "w0")
    assert not timeline.right("09:59:59.999", "u0")
    assert not timeline.right("09:59", "u1", 5)  # nor can a late replay replace a held right

    assert pickle.dumps(timeline.state) == before
    assert timeline.left("10:00", "w2") and timeline.right("10:00", "u2")


def test_a_right_older_than_the_ttl_does_not_match_and_then_the_state_empties() -> None:
    #  ttl 1h:  09:00 w1 → u1 (exactly 1h)   09:30 w2 → nothing (1h30)
    #  ──┼──────────┼─────────────┼──────
    #  08:00 u1
    timeline = Timeline(JoinRules("latest", state_ttl_ms=HOUR))
    timeline.right("08:00", "u1")
    timeline.left("09:00", "w1")
    timeline.left("09:30", "w2")

    assert timeline.pairs("09:00:00.001") == [("w1", "u1")]
    assert timeline.pairs("09:30:00.001") == [("w2", None)]
    assert timeline.state.is_empty and timeline.deadline() is None


def test_with_only_rights_held_the_state_empties_when_the_newest_expires() -> None:
    timeline = Timeline(JoinRules("latest", state_ttl_ms=HOUR))
    timeline.right("08:00", "u1")
    timeline.right("08:30", "u2")
    assert timeline.deadline() == at("09:30:00.001")

    timeline.fire("09:00")
    assert held(timeline.state) == ([], ["u2"])  # u1 is superseded by u2 for every later left
    timeline.fire("09:30")
    assert held(timeline.state) == ([], ["u2"]) and timeline.deadline() == at("09:30:00.001")
    timeline.fire("09:30:00.001")

    assert timeline.state.is_empty and timeline.deadline() is None


def test_adding_rights_prunes_the_ones_no_left_can_use() -> None:
    # A listing updated every minute and never wishlisted keeps one right, not all of them.
    timeline = Timeline()
    for minute in range(60):
        timeline.watermark = at(f"10:{minute:02d}")
        timeline.right(f"10:{minute:02d}", f"u{minute}")

    assert held(timeline.state) == ([], ["u58", "u59"])


# --- latest with a wait for a right after the left ------------------------------------------

WAIT = JoinRules("latest", state_ttl_ms=24 * HOUR, wait_ms=10 * 60_000)


def test_a_left_without_a_right_is_matched_by_one_arriving_within_the_wait() -> None:
    #  10:00 w1 (no listing yet) ───────────────── wait ends 10:10
    #  ───┼──────────┼──────┼──────────────────────────┼─────
    #             10:04 u1  10:06 u2                  10:10
    #  → w1 joined with u1 (the earliest) as soon as the watermark passes 10:04
    timeline = Timeline(WAIT)
    timeline.left("10:00", "w1")
    assert timeline.deadline() == at("10:10:00.001")
    assert timeline.pairs("10:03") == []

    timeline.right("10:06", "u2", 85)
    timeline.right("10:04", "u1", 90)

    assert timeline.deadline() == at("10:04:00.001")
    assert timeline.pairs("10:04") == []
    assert timeline.pairs("10:04:00.001") == [("w1", "u1")]


def test_a_right_before_the_left_wins_over_one_within_the_wait_and_needs_no_waiting() -> None:
    timeline = Timeline(WAIT)
    timeline.right("09:50", "u0", 95)
    timeline.right("10:04", "u1", 90)
    timeline.left("10:00", "w1")

    assert timeline.deadline() == at("10:00:00.001")
    assert timeline.pairs("10:00:00.001") == [("w1", "u0")]


def test_a_left_without_a_right_within_the_wait_is_emitted_with_nulls_after_it() -> None:
    #  10:00 w1 ────────── 10:10 wait ends → nulls
    #  ───┼─────────────────────┼─────┼─────
    #                                10:11 u1 (too late for w1)
    timeline = Timeline(WAIT)
    timeline.left("10:00", "w1")
    timeline.right("10:11", "u1")

    assert timeline.pairs("10:10") == []
    assert timeline.pairs("10:10:00.001") == [("w1", None)]


def test_without_emit_missing_a_left_with_no_match_is_dropped_and_reported() -> None:
    #  10:00 w1 ────────── 10:10 (dropped)
    #          10:05 w2 ────────────── 10:15 → u1
    #  ───┼──────┼──────────┼────┼─────────
    #                           10:12 u1
    rules = JoinRules("latest", state_ttl_ms=HOUR, wait_ms=10 * 60_000, emit_missing=False)
    timeline = Timeline(rules)
    timeline.left("10:00", "w1")
    timeline.left("10:05", "w2")
    timeline.right("10:12", "u1")

    fired = timeline.fire("10:10:00.001")
    assert fired.joined == [] and [r.event_id for r in fired.dropped] == ["w1"]
    assert timeline.pairs("10:12:00.001") == [("w2", "u1")]


# --- interval: every right within [t - before, t + after] -----------------------------------

INTERVAL = JoinRules("interval", state_ttl_ms=HOUR, before_ms=5 * 60_000, after_ms=10 * 60_000)


def test_an_interval_join_emits_one_output_per_right_within_the_bounds() -> None:
    #                       10:00 w1
    #            [────────────┼───────────────────────]      09:55 .. 10:10
    #  ───┼──────┼────────────┼──────┼─────────┼──────┼─────
    #   09:50 a  09:55 b          10:05 c   10:10 d   10:11 e
    #  → w1~b, w1~c, w1~d once the watermark passes 10:10
    timeline = Timeline(INTERVAL)
    for clock, event_id in [("10:11", "e"), ("09:50", "a"), ("10:05", "c"), ("09:55", "b")]:
        timeline.right(clock, event_id)
    timeline.left("10:00", "w1")
    timeline.right("10:10", "d")
    assert timeline.deadline() == at("10:10:00.001")
    assert timeline.pairs("10:10") == []

    fired = timeline.fire("10:10:00.001")

    assert [j.to_row(["price"], "interval")["event_id"] for j in fired.joined] == [
        "w1~b",
        "w1~c",
        "w1~d",
    ]


def test_an_interval_left_with_nothing_in_bounds_is_missing_under_its_own_id() -> None:
    timeline = Timeline(INTERVAL)
    timeline.right("09:54:59.999", "a")
    timeline.left("10:00", "w1")
    timeline.right("10:10:00.001", "b")

    [joined] = timeline.fire("10:10:00.001").joined

    assert joined.right is None and joined.to_row(["price"], "interval")["event_id"] == "w1"


def test_an_interval_join_keeps_rights_only_as_far_back_as_before() -> None:
    timeline = Timeline(INTERVAL)
    timeline.right("09:00", "a")
    timeline.right("09:56", "b")
    timeline.fire("10:00")

    assert held(timeline.state) == ([], ["b"])  # a left at 10:00 or later reaches back to 09:55
    assert timeline.deadline() == at("10:01:00.001")
    timeline.fire("10:01:00.001")
    assert timeline.state.is_empty and timeline.deadline() is None


# --- replays -------------------------------------------------------------------------------


def test_a_replayed_left_is_emitted_once() -> None:
    timeline = Timeline()
    timeline.right("09:00", "u1")
    timeline.left("10:00", "w1")
    timeline.left("10:00", "w1")

    assert timeline.pairs("10:00:00.001") == [("w1", "u1")]
    assert not timeline.left("10:00", "w1")  # a replay after it was emitted is late


def test_a_replayed_right_replaces_the_one_held() -> None:
    timeline = Timeline(INTERVAL)
    timeline.left("10:00", "w1")
    timeline.right("10:01", "u1", 90)
    timeline.right("10:02", "u1", 70)  # same id: replaces, even at another time

    [joined] = timeline.fire("11:00").joined

    assert joined.right == update("10:02", "u1", 70)


# --- rows and state --------------------------------------------------------------------------


def test_a_row_holds_the_left_then_the_chosen_right_fields_then_the_right_time() -> None:
    left, right = wish("10:00", "w1", user_id=42), update("09:00", "u1", 90)

    assert Joined(left, right).to_row(["price", "missing"], "latest") == {
        "user_id": 42,
        "event_id": "w1",
        "event_ts": "2026-05-01T10:00:00.000Z",
        "listing_id": 1,
        "price": 90,
        "missing": None,
        "right_event_ts": "2026-05-01T09:00:00.000Z",
    }
    assert list(Joined(left, None).to_row(["price"], "interval").items()) == [
        ("user_id", 42),
        ("event_id", "w1"),
        ("event_ts", "2026-05-01T10:00:00.000Z"),
        ("listing_id", 1),
        ("price", None),
        ("right_event_ts", None),
    ]


def test_a_right_field_cannot_replace_the_rows_own_user_id_or_time() -> None:
    left = wish("10:00", "w1", user_id=42)
    right = SideRecord(at("09:00"), "u1", "09:00", {"user_id": 9, "event_ts": "x", "price": 1})

    row = Joined(left, right).to_row(["user_id", "event_ts", "price"], "latest")

    assert (row["user_id"], row["event_ts"], row["price"]) == (42, left.event_ts, 1)
    with pytest.raises(ValueError, match="'latest' or 'interval'"):
        Joined(left, right).to_row(["price"], "temporal")


def test_the_state_survives_pickling_compactly_as_flink_keeps_it() -> None:
    timeline = Timeline()
    timeline.right("09:00", "u1", 90)
    timeline.right("09:30", "u2", 80)
    timeline.left("10:00", "w1")
    restored = pickle.loads(pickle.dumps(timeline.state))
    assert restored == timeline.state

    # The id indexes come back with it: a replay still replaces rather than duplicates.
    timeline.logic.add_right(restored, update("09:30", "u2", 70), NO_WATERMARK)
    assert held(restored) == (["w1"], ["u1", "u2"])
    [joined] = timeline.logic.fire(restored, EVERYTHING).joined
    assert joined.right == update("09:30", "u2", 70)


def test_the_pickled_state_costs_a_few_bytes_per_record_over_bare_tuples() -> None:
    # Flink pickles the state on every update: no field names, no id indexes.
    timeline = Timeline()
    for second in range(200):
        timeline.right(f"10:00:{second / 4:06.3f}", f"u{second}", second)
    bare = [(r.time_ms, r.event_id, r.event_ts, r.fields) for r in timeline.state.rights]

    overhead = len(pickle.dumps(timeline.state)) - len(pickle.dumps(([], bare)))

    assert overhead < 200 * 5 + 100


def busy_listing(rules: JoinRules) -> Timeline:
    #   09:58 w   10:03 w  10:05 w                    10:30 w
    #  ────┼────┼────┼──────┼────┼────────────┼──────────┼────
    #         10:00 u           10:07 u     10:20 u
    timeline = Timeline(rules)
    for clock in ["10:00", "10:07", "10:20"]:
        timeline.right(clock, f"u@{clock}")
    for clock in ["09:58", "10:03", "10:05", "10:30"]:
        timeline.left(clock, f"w@{clock}")
    return timeline


@pytest.mark.parametrize("rules", [LATEST, WAIT, INTERVAL], ids=["latest", "wait", "interval"])
def test_firing_at_the_deadline_always_makes_progress_and_never_earlier(rules: JoinRules) -> None:
    timeline = busy_listing(rules)
    emitted: list[tuple[str, str | None]] = []

    while (deadline := timeline.deadline()) is not None:
        copy = pickle.loads(pickle.dumps(timeline.state))
        assert timeline.logic.fire(copy, deadline - 1) == Fired([], [])  # nothing due sooner
        before = held(timeline.state)
        fired = timeline.logic.fire(timeline.state, deadline)
        assert fired.joined or held(timeline.state) != before  # so the timers never spin
        assert timeline.deadline() is None or timeline.deadline() > deadline
        emitted += pairs(fired)

    at_once = busy_listing(rules)
    assert emitted == pairs(at_once.logic.fire(at_once.state, EVERYTHING))
    assert timeline.state.is_empty


# --- rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"how": "temporal", "state_ttl_ms": HOUR}, "how must be 'latest' or 'interval'"),
        ({"how": "latest", "state_ttl_ms": 0}, "state_ttl_ms must be more than 0"),
        ({"how": "latest", "state_ttl_ms": -1}, "state_ttl_ms must be zero or more"),
        ({"how": "latest", "state_ttl_ms": HOUR, "wait_ms": -5}, "wait_ms must be zero or more"),
        ({"how": "latest", "state_ttl_ms": 1.5}, r"whole milliseconds \(an int\), got 1.5"),
        ({"how": "interval", "state_ttl_ms": HOUR, "wait_ms": 10}, "wait_ms applies to how='la"),
        ({"how": "latest", "state_ttl_ms": HOUR, "before_ms": 10}, "apply to how='interval'"),
        ({"how": "latest", "state_ttl_ms": HOUR, "after_ms": 10}, "apply to how='interval'"),
        (
            {"how": "interval", "state_ttl_ms": 60_000, "before_ms": HOUR},
            "raise state_ttl_ms to 3600000 or more",
        ),
    ],
)
def test_rules_reject_nonsense_with_one_clear_sentence(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        JoinRules(**kwargs)


# --- any feeding agrees with a batch join over the same events ------------------------------


@dataclass(frozen=True)
class Event:
    side: str  # "left" or "right"
    record: SideRecord


def batch_join(rules: JoinRules, events: list[Event]) -> list[tuple[str, str | None]]:
    """The join over all events at once, written plainly: the reference the stream must match.

    Dropped lefts appear as ``(id, "dropped")``.
    """
    lefts = sorted((e.record for e in events if e.side == "left"), key=lambda r: r.time_ms)
    rights = [e.record for e in events if e.side == "right"]
    out: list[tuple[str, str | None]] = []
    for left in lefts:
        t = left.time_ms
        if rules.how == "latest":
            before = [r for r in rights if r.time_ms <= t and t - r.time_ms <= rules.state_ttl_ms]
            after = [r for r in rights if t < r.time_ms <= t + rules.wait_ms]
            if before:
                matches = [max(before, key=lambda r: (r.time_ms, r.event_id))]
            elif after:
                matches = [min(after, key=lambda r: (r.time_ms, r.event_id))]
            else:
                matches = []
        else:
            matches = [r for r in rights if t - rules.before_ms <= r.time_ms <= t + rules.after_ms]
        if matches:
            out += [(left.event_id, r.event_id) for r in matches]
        else:
            out.append((left.event_id, None if rules.emit_missing else "dropped"))
    return sorted(out, key=str)


def ready_at(rules: JoinRules, left: SideRecord, events: list[Event]) -> int:
    """The earliest watermark at which a left's result is settled, knowing every event."""
    t = left.time_ms
    if rules.how == "interval":
        return t + rules.after_ms + 1
    rights = [e.record.time_ms for e in events if e.side == "right"]
    if not rules.wait_ms or any(t - rules.state_ttl_ms <= r <= t for r in rights):
        return t + 1
    within_wait = [r for r in rights if t < r <= t + rules.wait_ms]
    return min(within_wait) + 1 if within_wait else t + rules.wait_ms + 1


def outputs(fired: Fired) -> list[tuple[str, str | None]]:
    return pairs(fired) + [(r.event_id, "dropped") for r in fired.dropped]


@st.composite
def join_rules(draw: st.DrawFn) -> JoinRules:
    # Small times, so that equal times and exact TTL, wait and interval edges come up often.
    ttl = draw(st.integers(1, 20))
    emit_missing = draw(st.booleans())
    if draw(st.booleans()):
        return JoinRules("latest", ttl, wait_ms=draw(st.integers(0, 10)), emit_missing=emit_missing)
    return JoinRules(
        "interval",
        ttl,
        before_ms=draw(st.integers(0, ttl)),
        after_ms=draw(st.integers(0, 10)),
        emit_missing=emit_missing,
    )


@st.composite
def join_events(draw: st.DrawFn) -> list[Event]:
    sides_and_times = draw(
        st.lists(st.tuples(st.sampled_from(["left", "right"]), st.integers(0, 40)), max_size=30)
    )
    # Ids "r2" > "r10": tie-breaks by id do not follow the order the events were drawn in.
    return [
        Event(side, SideRecord(t, f"{side[0]}{i}", str(t), {"user_id": 1, "n": i}))
        for i, (side, t) in enumerate(sides_and_times)
    ]


def feed(logic: JoinLogic, state: JoinState, event: Event, watermark: int) -> bool:  # -> applied
    add = logic.add_left if event.side == "left" else logic.add_right
    return add(state, event.record, watermark)


@settings(max_examples=400, deadline=None)
@given(rules=join_rules(), events=join_events(), by_timer=st.booleans(), seed=st.integers(0))
def test_in_order_streaming_equals_the_batch_join(
    rules: JoinRules, events: list[Event], by_timer: bool, seed: int
) -> None:
    # Events in event-time order (any order among equal times); the watermark follows them.
    # by_timer fires only at the deadlines, as the Flink timer does: at a deadline there must
    # be work, and before it none (else the timer would spin, or outputs come late).
    ties = random.Random(seed)
    arrival = sorted(events, key=lambda e: (e.record.time_ms, ties.random()))
    ready = {e.record.event_id: ready_at(rules, e.record, events) for e in events}
    logic, state = JoinLogic(rules), JoinState()
    emitted: list[tuple[str, str | None]] = []

    def fire(watermark: int) -> Fired:
        # Exactly the lefts whose result the watermark has settled come out, no later.
        done = {left for left, _ in emitted}
        fired = logic.fire(state, watermark)
        emitted.extend(outputs(fired))
        settled = {e for e, at in ready.items() if e[0] == "l" and at <= watermark} - done
        assert {left for left, _ in outputs(fired)} == settled
        return fired

    for event in arrival:
        watermark = event.record.time_ms
        if by_timer:
            while (deadline := logic.deadline(state)) is not None and deadline <= watermark:
                before = held(state)
                fired = fire(deadline)
                assert outputs(fired) or held(state) != before, "a deadline with nothing due"
            copy = pickle.loads(pickle.dumps(state))
            assert outputs(logic.fire(copy, watermark)) == [], "due before the deadline"
        else:
            fire(watermark)
        assert feed(logic, state, event, watermark)
    while (deadline := logic.deadline(state)) is not None:
        fire(deadline)

    assert sorted(emitted, key=str) == batch_join(rules, events)
    assert state.is_empty


@settings(max_examples=300, deadline=None)
@given(
    rules=join_rules(),
    events=join_events(),
    bound=st.integers(0, 30),
    seed=st.integers(0, 2**32),
)
def test_out_of_order_arrival_within_the_bound_gives_the_same_rows(
    rules: JoinRules, events: list[Event], bound: int, seed: int
) -> None:
    # Each event arrives at most ``bound`` ms of event time after later ones; the watermark is
    # the newest time seen minus the bound, so none is late.
    jitter = random.Random(seed)
    arrival = sorted(events, key=lambda e: e.record.time_ms + jitter.randint(0, bound))
    logic, state = JoinLogic(rules), JoinState()
    emitted: list[tuple[str, str | None]] = []
    newest = NO_WATERMARK
    for event in arrival:
        assert feed(logic, state, event, newest - bound)
        newest = max(newest, event.record.time_ms)
        emitted += outputs(logic.fire(state, newest - bound))
    emitted += outputs(logic.fire(state, EVERYTHING))

    assert sorted(emitted, key=str) == batch_join(rules, events)
    assert state.is_empty
