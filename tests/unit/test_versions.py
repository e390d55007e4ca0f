"""The versioned record format and the rule that collapses versions for readers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usp_feast.versions import (
    VERSION_WIDTH,
    Record,
    collapse_versions,
    decode_member,
    encode_member,
    from_micros,
    to_micros,
    version_counts,
)

pytestmark = pytest.mark.unit

event_ids = st.text(min_size=1, max_size=40).filter(lambda s: "\x1f" not in s)
versions = st.integers(min_value=0, max_value=10**VERSION_WIDTH - 1)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
records = st.builds(
    Record,
    event_id=event_ids,
    event_ts=st.integers(min_value=0, max_value=2**62),
    version=versions,
    fields=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
)


def _record(event_id: str, event_ts: int, version: int, **fields: object) -> Record:
    return Record(event_id=event_id, event_ts=event_ts, version=version, fields=dict(fields))


def _seen(records: list[Record], as_of: int | None = None) -> list[tuple[str, int]]:
    """What a reader sees: (event id, version) per event, in the order it is returned."""
    return [(r.event_id, r.version) for r in collapse_versions(records, as_of=as_of)]


# --- the member encoding -------------------------------------------------------------------


@given(records)
def test_a_member_decodes_to_the_record_it_was_encoded_from(record: Record) -> None:
    assert decode_member(encode_member(record)) == record


def test_a_member_starts_with_the_fixed_width_version_then_the_event_id() -> None:
    member = encode_member(_record("ev-1", 1_000, 42, query="paris"))

    assert member.startswith(b"0000000000000042ev-1\x1f")


def test_an_event_id_with_the_separator_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="event id 'a\\\\x1fb' contains the reserved byte 0x1f"):
        encode_member(_record("a\x1fb", 1, 1))


@pytest.mark.parametrize("version", [-1, 10**VERSION_WIDTH])
def test_a_version_that_does_not_fit_is_refused(version: int) -> None:
    with pytest.raises(ValueError, match=f"version {version} does not fit 16 digits"):
        encode_member(_record("ev-1", 1, version))


@given(st.lists(st.tuples(versions, event_ids), min_size=2, max_size=20))
def test_members_of_equal_score_sort_newest_version_first(entries: list[tuple[int, str]]) -> None:
    # Redis orders members of equal score by their bytes; reading them in reverse must give
    # the newest version first, whatever the event ids.
    members = [encode_member(_record(event_id, 7, version)) for version, event_id in entries]

    read_back = [decode_member(m).version for m in sorted(members, reverse=True)]

    assert read_back == sorted((v for v, _ in entries), reverse=True)


# --- time conversions ----------------------------------------------------------------------


# Hypothesis takes naive bounds; `timezones` makes the drawn values aware.
@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001
def test_micros_round_trip_to_the_same_instant(moment: datetime) -> None:
    assert from_micros(to_micros(moment)) == moment


def test_micros_keep_every_microsecond_of_a_present_day_time() -> None:
    moment = datetime(2026, 11, 26, 17, 0, 0, 123_457, tzinfo=UTC)

    assert to_micros(moment) == 1_795_712_400_123_457


def test_micros_of_another_zone_are_the_same_instant() -> None:
    paris = datetime(2026, 11, 26, 18, 0, tzinfo=timezone(timedelta(hours=1)))

    assert to_micros(paris) == to_micros(datetime(2026, 11, 26, 17, 0, tzinfo=UTC))


def test_naive_datetimes_are_taken_as_utc() -> None:
    assert to_micros(datetime(2026, 11, 26, 17, 0)) == to_micros(  # noqa: DTZ001
        datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    )


def test_a_record_shows_its_times_as_utc_datetimes() -> None:
    record = _record("ev-1", 1_795_712_400_000_000, 1_795_712_460_500_000)

    assert record.event_time == datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    assert record.processed_at == datetime(2026, 11, 26, 17, 1, 0, 500_000, tzinfo=UTC)


# --- collapse_versions -------------------------------------------------------------------


def test_a_replay_adds_a_version_but_the_reader_sees_the_event_once() -> None:
    # processing time ──►   100             500 (replay after a crash)
    # e1 (event time 10)    v100 "paris"    v500 "paris"
    # e2 (event time 20)    v100 "rome"
    #
    # seen: e2@v100, e1@v500 — one row per event, the replayed version wins.
    stored = [
        _record("e1", 10, 100, query="paris"),
        _record("e2", 20, 100, query="rome"),
        _record("e1", 10, 500, query="paris"),
    ]

    assert _seen(stored) == [("e2", 100), ("e1", 500)]


def test_as_of_hides_later_versions_and_shows_the_older_one() -> None:
    # processing time ──►   100             300 (a price correction)
    # e1 (event time 10)    v100 price 90   v300 price 120
    #
    # as_of 200  → v100 (what we knew then: 90)
    # as_of 300  → v300 (a version written exactly at as_of is already known)
    # as_of None → v300
    stored = [_record("e1", 10, 100, price=90), _record("e1", 10, 300, price=120)]

    assert [r.fields for r in collapse_versions(stored, as_of=200)] == [{"price": 90}]
    assert [r.fields for r in collapse_versions(stored, as_of=300)] == [{"price": 120}]
    assert [r.fields for r in collapse_versions(stored)] == [{"price": 120}]


def test_an_event_with_no_version_before_as_of_is_invisible() -> None:
    # processing time ──►   100     400 (late arrival)
    # e1 (event time 10)    v100
    # e2 (event time 30)            v400
    #
    # as_of 200 → only e1: at 200 nobody knew about e2, though its event time is later.
    stored = [_record("e1", 10, 100), _record("e2", 30, 400)]

    assert _seen(stored, as_of=200) == [("e1", 100)]
    assert _seen(stored, as_of=99) == []


def test_newest_event_first_whatever_order_versions_arrive_in() -> None:
    # event time ──►   10     20     30
    #                  e1     e2     e3
    # processing order: e3@100, e1@150, e2@200, e1@250 (replay)
    #
    # seen: e3, e2, e1 — ordered by event time, not by when they were processed.
    stored = [
        _record("e3", 30, 100),
        _record("e1", 10, 150),
        _record("e2", 20, 200),
        _record("e1", 10, 250),
    ]

    assert _seen(stored) == [("e3", 100), ("e2", 200), ("e1", 250)]


def test_events_at_the_same_time_show_the_newest_version_first() -> None:
    # event time 10: e1@100, e2@300, e3@200 → seen e2, e3, e1
    stored = [_record("e1", 10, 100), _record("e2", 10, 300), _record("e3", 10, 200)]

    assert _seen(stored) == [("e2", 300), ("e3", 200), ("e1", 100)]


def test_events_at_the_same_time_and_version_are_ordered_by_id_like_redis() -> None:
    # One batch (same version) of events with the same event time: Redis returns members of
    # equal score in reverse byte order, which after the version prefix is the event id.
    stored = [_record("b", 10, 100), _record("c", 10, 100), _record("a", 10, 100)]

    assert _seen(stored) == [("c", 100), ("b", 100), ("a", 100)]


@st.composite
def _histories(draw: st.DrawFn) -> list[Record]:
    """Versions of a few events, with (event id, version) unique as the writer guarantees."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["e1", "e2", "e3", "e4"]), st.integers(1, 50)),
            unique=True,
            max_size=20,
        )
    )
    return [_record(event_id, draw(st.integers(0, 5)), version) for event_id, version in keys]


@given(_histories(), st.one_of(st.none(), st.integers(0, 60)))
def test_replaying_everything_again_changes_nothing_a_reader_sees(
    history: list[Record], as_of: int | None
) -> None:
    assert _seen(history + history, as_of) == _seen(history, as_of)


@given(_histories(), st.one_of(st.none(), st.integers(0, 60)), st.randoms())
def test_what_a_reader_sees_does_not_depend_on_storage_order(
    history: list[Record], as_of: int | None, rng: random.Random
) -> None:
    shuffled = list(history)
    rng.shuffle(shuffled)

    assert _seen(shuffled, as_of) == _seen(history, as_of)


@given(_histories(), st.one_of(st.none(), st.integers(0, 60)))
def test_each_visible_event_appears_once_with_its_newest_known_version(
    history: list[Record], as_of: int | None
) -> None:
    visible = [r for r in history if as_of is None or r.version <= as_of]
    newest = {
        r.event_id: max(v.version for v in visible if v.event_id == r.event_id) for r in visible
    }

    assert sorted(_seen(history, as_of)) == sorted(newest.items())


# --- version_counts ------------------------------------------------------------------------


def test_each_replay_or_correction_adds_one_to_the_count_readers_see() -> None:
    # processing time ──►   100        300 (correction)    500 (replay)
    # e1 (event time 10)    v100       v300                v500
    # e2 (event time 20)    v100
    #
    # now        → e1: 3 versions, e2: 1
    # as_of 300  → e1: 2 (v500 not written yet), e2: 1
    # as_of 99   → nothing visible, nothing counted
    stored = [
        _record("e1", 10, 100, price=90),
        _record("e2", 20, 100),
        _record("e1", 10, 300, price=120),
        _record("e1", 10, 500, price=120),
    ]

    assert version_counts(stored) == {"e1": 3, "e2": 1}
    assert version_counts(stored, as_of=300) == {"e1": 2, "e2": 1}
    assert version_counts(stored, as_of=99) == {}


def test_the_same_member_written_twice_counts_once() -> None:
    # Redis keeps one member for an identical (version, id, body): it is one version.
    stored = [_record("e1", 10, 100), _record("e1", 10, 100)]

    assert version_counts(stored) == {"e1": 1}


@given(_histories(), st.one_of(st.none(), st.integers(0, 60)))
def test_every_event_a_reader_sees_has_a_count_and_no_other(
    history: list[Record], as_of: int | None
) -> None:
    counts = version_counts(history, as_of)

    assert sorted(counts) == sorted(event_id for event_id, _ in _seen(history, as_of))
    assert sum(counts.values()) == len(
        {(r.event_id, r.version) for r in history if as_of is None or r.version <= as_of}
    )
    assert version_counts(history + history, as_of) == counts  # a replay of the same members
