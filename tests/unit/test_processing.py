"""One Kafka record in, one signal row or one dead letter out (the job's pure core)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from usp_feast.contracts import Contract
from usp_feast.definitions import load_definitions, load_transform, validation_dir
from usp_feast.pipeline import EventTimeBounds, SignalPipeline
from usp_feast.processing import (
    Accepted,
    DeadLetter,
    SignalProcessor,
    SourcePosition,
    event_time_ms,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
AT = SourcePosition("events.search", partition=0, offset=41, timestamp_ms=1_790_000_000_000)


@pytest.fixture(scope="module")
def search() -> SignalProcessor:
    spec = load_definitions(REPO).signal("search")
    contract = Contract.load(validation_dir(REPO) / "search.json")
    return SignalProcessor(SignalPipeline(spec, load_transform(spec, REPO)), contract)


def event(**changes: object) -> dict:
    base = {
        "event_id": "e1",
        "event_ts": "2026-11-26T17:00:00.123Z",
        "user_id": 42,
        "query": "  Loft  in PARIS ",
        "city": "paris ",
        "checkin": "2026-12-01",
        "checkout": "2026-12-04",
        "guests": 2,
        "referrer": "extra fields are allowed",
    }
    return {**base, **changes}


def test_a_valid_event_becomes_the_transformed_row(search: SignalProcessor) -> None:
    outcome = search.process(orjson.dumps(event()), AT)
    assert isinstance(outcome, Accepted)
    assert outcome.row["user_id"] == 42 and outcome.row["event_id"] == "e1"
    assert outcome.row["query"] == "loft in paris"
    assert outcome.row["city"] == "Paris"
    assert "referrer" not in outcome.row
    assert event_time_ms(outcome.row) == int(
        datetime(2026, 11, 26, 17, 0, 0, 123000, UTC).timestamp() * 1000
    )


@pytest.mark.parametrize(
    ("raw", "expectation", "words"),
    [
        (b"{broken", "payload.json", ""),
        (b"\xff\xfe{}", "payload.encoding", ""),
        (b"[1, 2]", "payload.object", ""),
        (orjson.dumps(event(query="x" * 70_000)), "payload.size", ""),
        (orjson.dumps(event(guests=40)), "expect_column_values_to_be_between", "guests"),
        (orjson.dumps(event(guests="two")), "expect_column_values_to_be_of_type", "guests"),
        (
            orjson.dumps(event(checkin="1st of May")),
            "expect_column_values_to_match_regex",
            "checkin",
        ),
        (
            orjson.dumps(event(event_ts="yesterday")),
            "expect_column_values_to_match_regex",
            "event_ts",
        ),
    ],
)
def test_bad_records_become_dead_letters_with_reason_bytes_and_offset(
    search: SignalProcessor, raw: bytes, expectation: str, words: str
) -> None:
    outcome = search.process(raw, AT)
    assert isinstance(outcome, DeadLetter)
    letter = orjson.loads(outcome.to_json())
    assert base64.b64decode(letter["original_base64"]) == raw
    assert letter["source"] == {
        "topic": "events.search",
        "partition": 0,
        "offset": 41,
        "timestamp_ms": 1_790_000_000_000,
    }
    assert expectation in [r["expectation"] for r in letter["reasons"]]
    assert all(
        words in f"{r['column']} {r['message']}"
        for r in letter["reasons"]
        if r["expectation"] == expectation
    )


def test_every_violation_is_reported(search: SignalProcessor) -> None:
    outcome = search.process(orjson.dumps(event(guests=0, city=None, checkout="soon")), AT)
    assert isinstance(outcome, DeadLetter)
    columns = {v.column for v in outcome.reasons}
    assert {"guests", "city", "checkout"} <= columns


def test_a_transform_failure_is_a_dead_letter_not_a_crash(search: SignalProcessor) -> None:
    class Exploding:
        def transform(self, event):
            raise ZeroDivisionError("boom")

    broken = SignalProcessor(SignalPipeline(search.pipeline.spec, Exploding()), search.contract)
    outcome = broken.process(orjson.dumps(event()), AT)
    assert isinstance(outcome, DeadLetter)
    assert outcome.reasons[0].expectation == "transform"
    assert "ZeroDivisionError('boom')" in outcome.reasons[0].message


def test_a_transform_may_drop_an_event(search: SignalProcessor) -> None:
    class Dropping:
        def transform(self, event):
            return None

    quiet = SignalProcessor(SignalPipeline(search.pipeline.spec, Dropping()), search.contract)
    assert quiet.process(orjson.dumps(event()), AT) is None


def test_a_batch_is_each_record_processed_alone_split_by_outcome(search: SignalProcessor) -> None:
    records = [
        (orjson.dumps(event(event_id="a")), AT),
        (b"{broken", SourcePosition("events.search", 0, 42)),
        (orjson.dumps(event(event_id="b", guests=0)), SourcePosition("events.search", 0, 43)),
        (orjson.dumps(event(event_id="c")), AT),
    ]
    outcome = search.process_batch(records)
    assert [row["event_id"] for row in outcome.rows] == ["a", "c"]
    assert [letter.position.offset for letter in outcome.dead_letters] == [42, 43]
    one_by_one = [search.process(raw, at) for raw, at in records]
    assert outcome.rows == [o.row for o in one_by_one if isinstance(o, Accepted)]
    assert outcome.dead_letters == [o for o in one_by_one if isinstance(o, DeadLetter)]


# Event time against the clock (fixed at NOW):
#
#   ancient ........ retention (30d) ..... now -5m ... NOW ... +5m ....... far future
#   rejected         accepted                          accepted    rejected
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def live_search(search: SignalProcessor) -> SignalProcessor:
    spec = search.pipeline.spec
    bounds = EventTimeBounds(max_age=spec.retention, clock=lambda: NOW)
    return SignalProcessor(SignalPipeline(spec, search.pipeline.transform, bounds), search.contract)


@pytest.mark.parametrize(
    ("event_ts", "why"),
    [
        ("2026-11-27T13:00:00Z", "is 1h ahead of the clock (at most 5m)"),
        ("2099-01-01T00:00:00Z", "ahead of the clock"),
        ("1970-01-01T00:00:00Z", "is older than 30d (the signal's retention)"),
    ],
)
def test_an_event_time_far_from_the_clock_is_dead_lettered_with_the_bound(
    live_search: SignalProcessor, event_ts: str, why: str
) -> None:
    outcome = live_search.process(orjson.dumps(event(event_ts=event_ts)), AT)

    assert isinstance(outcome, DeadLetter)
    assert why in outcome.reasons[0].message


@pytest.mark.parametrize(
    "event_ts", ["2026-11-27T12:04:59Z", "2026-11-27T11:00:00Z", "2026-10-29T12:00:00Z"]
)
def test_an_event_time_within_the_bounds_is_accepted(
    live_search: SignalProcessor, event_ts: str
) -> None:
    outcome = live_search.process(orjson.dumps(event(event_ts=event_ts)), AT)

    assert isinstance(outcome, Accepted)
