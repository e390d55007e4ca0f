"""The batch path without services: raw history in Parquet, the stream's code over it, and what
is new for the offline store.

Ranges are drawn as times on 2026-11-26 (UTC): the backfill covers ``[00:00, 24:00)``, an event
at 24:00 (the next midnight) is outside it, as is one at 23:59 the day before.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from usp_feast.backfill import (
    BackfillError,
    BackfillSummary,
    ComputedUnit,
    TimeRange,
    UnitResult,
    compute_unit,
    new_offline_rows,
    stored_fields,
)
from usp_feast.contracts import Contract
from usp_feast.definitions import load_definitions, load_transform, validation_dir
from usp_feast.jobs import (
    BackfillConfig,
    backfill_config,
    load_backfill_config,
    render_backfill_configs,
)
from usp_feast.offline import (
    CREATED_COLUMN,
    ParquetParts,
    latest_offline_versions,
    part_files,
    signal_offline_rows,
    signal_offline_schema,
)
from usp_feast.pipeline import SignalPipeline
from usp_feast.processing import DeadLetter, SignalProcessor, SourcePosition
from usp_feast.raw_history import (
    HistoryError,
    HistoryUnit,
    days_between,
    find_units,
    read_unit,
    write_history,
)
from usp_feast.reconcile import Difference, compare
from usp_feast.spec import SignalSpec
from usp_feast.traffic import RawEvent
from usp_feast.versions import from_micros, to_micros

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REPO = ROOT / "feature_repo"

DAY = datetime(2026, 11, 26, tzinfo=UTC)
WINDOW = TimeRange(DAY, DAY + timedelta(days=1))


def at(clock: str, day: int = 26) -> str:
    """``"17:00"`` or ``"17:00:00.123"`` on 2026-11-<day> as the ISO text producers send."""
    if clock.count(":") == 1:
        clock += ":00"
    return f"2026-11-{day:02d}T{clock}Z"


def moment(clock: str, day: int = 26) -> datetime:
    return datetime.fromisoformat(at(clock, day).replace("Z", "+00:00"))


def search(event_id: str, event_ts: Any, **changes: Any) -> dict[str, Any]:
    """A valid raw search event (``event_ts=None`` leaves the time out)."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "user_id": 42,
        "query": "loft in paris",
        "city": "paris",
        "checkin": "2026-12-01",
        "checkout": "2026-12-04",
        "guests": 2,
    }
    if event_ts is not None:
        event["event_ts"] = event_ts
    return {**event, **changes}


def records(*raws: bytes | dict[str, Any], topic: str = "events.search") -> list[tuple[bytes, Any]]:
    """One batch: each event's bytes at offsets 0, 1, ..."""
    return [
        (raw if isinstance(raw, bytes) else orjson.dumps(raw), SourcePosition(topic, 0, offset))
        for offset, raw in enumerate(raws)
    ]


class DropsQueries:
    """The example search transform, except that it drops searches for ``drop me``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def transform(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return None if event["query"] == "drop me" else self.inner.transform(event)


@pytest.fixture(scope="module")
def processor() -> SignalProcessor[dict[str, Any]]:
    """The search signal's per-record code, as the streaming job and the backfill build it."""
    spec = load_definitions(REPO).signal("search")
    assert isinstance(spec, SignalSpec)
    contract = Contract.load(validation_dir(REPO) / "search.json")
    return SignalProcessor(SignalPipeline(spec, DropsQueries(load_transform(spec, REPO))), contract)


def compute(
    processor: SignalProcessor[dict[str, Any]], *raws: bytes | dict[str, Any]
) -> ComputedUnit:
    return compute_unit(processor, [records(*raws)], WINDOW)


# --- TimeRange ------------------------------------------------------------------------------


def test_a_range_is_half_open() -> None:
    assert WINDOW.contains(DAY)
    assert WINDOW.contains(moment("23:59:59.999999"))
    assert not WINDOW.contains(DAY + timedelta(days=1))
    assert not WINDOW.contains(DAY - timedelta(microseconds=1))


def test_a_range_compares_instants_whatever_their_zone() -> None:
    paris = timezone(timedelta(hours=1))
    assert WINDOW.contains(datetime(2026, 11, 27, 0, 30, tzinfo=paris))  # 23:30 UTC
    assert not WINDOW.contains(
        datetime(2026, 11, 26, 0, 30, tzinfo=paris)
    )  # 23:30 UTC the day before


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (datetime(2026, 11, 26), DAY + timedelta(days=1), "timezone"),  # noqa: DTZ001
        (DAY, datetime(2026, 11, 27), "timezone"),  # noqa: DTZ001
        (DAY, DAY, "not after start"),
        (DAY, DAY - timedelta(seconds=1), "not after start"),
    ],
)
def test_a_range_without_zones_or_running_backwards_is_refused(
    start: datetime, end: datetime, words: str
) -> None:
    with pytest.raises(BackfillError, match=words):
        TimeRange(start, end)


# --- compute_unit: the stream's code over one unit ------------------------------------------


def test_valid_events_in_the_range_become_rows_by_event_id(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    unit = compute(processor, search("e1", at("10:00")), search("e2", at("11:00"), city=" rome "))

    assert sorted(unit.rows) == ["e1", "e2"]
    row = unit.rows["e2"]
    assert (row["user_id"], row["event_id"], row["event_ts"]) == (42, "e2", moment("11:00"))
    assert row["city"] == "Rome"  # the transform ran
    assert (unit.read, unit.rejects, unit.outside, unit.dropped) == (2, [], 0, 0)


def test_a_repeated_event_id_keeps_the_last_one_read(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    #  read order: e1 (paris, 10:00), e2, e1 (rome, 09:00): the second e1 wins, older or not
    unit = compute(
        processor,
        search("e1", at("10:00")),
        search("e2", at("10:30")),
        search("e1", at("09:00"), city="rome"),
    )

    assert len(unit.rows) == 2 and unit.read == 3
    assert (unit.rows["e1"]["city"], unit.rows["e1"]["event_ts"]) == ("Rome", moment("09:00"))


def test_malformed_records_are_rejected_with_reasons_and_their_bytes(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    too_many = orjson.dumps(search("e2", at("10:00"), guests=40))
    unit = compute(processor, b"{broken", too_many, search("e3", at("10:00")))

    assert sorted(unit.rows) == ["e3"]
    assert [(r.position.offset, r.original) for r in unit.rejects] == [
        (0, b"{broken"),
        (1, too_many),
    ]
    assert [r.signal for r in unit.rejects] == ["search", "search"]
    assert unit.rejects[0].reasons[0].expectation == "payload.json"
    [reason] = unit.rejects[1].reasons
    assert reason.expectation == "expect_column_values_to_be_between"
    assert reason.column == "guests"
    assert (unit.read, unit.outside) == (3, 0)


def test_an_event_the_transform_cannot_handle_is_rejected_by_the_transform(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    class Broken:
        def transform(self, event: dict[str, Any]) -> dict[str, Any]:
            raise ZeroDivisionError("oops")

    pipeline = processor.pipeline
    assert isinstance(pipeline, SignalPipeline)
    broken = SignalProcessor(SignalPipeline(pipeline.spec, Broken()), processor.contract)

    [reject] = compute(broken, search("e1", at("10:00"))).rejects

    assert [v.expectation for v in reject.reasons] == ["transform"]
    assert "ZeroDivisionError" in reject.reasons[0].message


def test_valid_events_outside_the_range_are_counted_not_kept(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    #  25th 23:59:59.999 (out) | 26th 00:00 (in) ... 23:59:59.999 (in) | 27th 00:00 (out)
    unit = compute(
        processor,
        search("before", at("23:59:59.999", day=25)),
        search("first", at("00:00")),
        search("last", at("23:59:59.999")),
        search("end", at("00:00", day=27)),
    )

    assert sorted(unit.rows) == ["first", "last"]
    assert (unit.outside, unit.rejects, unit.read) == (2, [], 4)


def test_a_rejected_event_whose_time_is_outside_the_range_counts_as_outside(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    # Its own day's backfill reports it; this range must not report it a second time.
    unit = compute(
        processor,
        search("early", at("23:00", day=25), guests=40),
        search("late", at("00:00", day=27), guests=40),
        search("inside", at("12:00"), guests=40),
    )

    assert [r.position.offset for r in unit.rejects] == [2]
    assert (unit.outside, unit.rows) == (2, {})


@pytest.mark.parametrize(
    "raw",
    [
        b"{broken",
        b"[1, 2]",
        orjson.dumps(search("e1", None)),
        orjson.dumps(search("e1", "yesterday")),
        orjson.dumps(search("e1", "2026-11-26T10:00:00")),  # no zone: not guessed
        orjson.dumps(search("e1", 1_795_700_000)),
    ],
    ids=["not-json", "not-an-object", "no-time", "not-a-time", "no-zone", "a-number"],
)
def test_a_record_without_a_readable_time_is_rejected_whatever_the_range(
    processor: SignalProcessor[dict[str, Any]], raw: bytes
) -> None:
    unit = compute(processor, raw)

    assert [r.original for r in unit.rejects] == [raw]
    assert (unit.outside, unit.rows, unit.read) == (0, {}, 1)


def test_an_event_the_transform_drops_is_counted_as_dropped(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    unit = compute(processor, search("e1", at("10:00"), query="drop me"), search("e2", at("10:00")))

    assert sorted(unit.rows) == ["e2"]
    assert (unit.dropped, unit.outside, unit.rejects) == (1, 0, [])


def test_an_event_outside_the_range_counts_as_outside_even_when_the_transform_drops_it(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    # As for rejects: a unit's counts describe its range only, so a date partition read by two
    # adjacent ranges does not count the same event in both (ComputedUnit.outside: valid
    # records outside the range are not processed further).
    unit = compute(processor, search("e1", at("10:00", day=27), query="drop me"))

    assert (unit.outside, unit.dropped) == (1, 0)


def test_keep_events_collects_the_records_that_parse_as_json_objects(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    outside = search("e2", at("10:00", day=27))
    batch = records(search("e1", at("10:00")), b"{broken", b"[1]", outside, {"guests": "two"})

    kept = compute_unit(processor, [batch], WINDOW, keep_events=True)
    not_kept = compute_unit(processor, [batch], WINDOW)

    assert kept.events == [search("e1", at("10:00")), outside, {"guests": "two"}]
    assert not_kept.events == []
    assert kept.rows.keys() == not_kept.rows.keys()


def test_progress_hears_of_each_batch_as_it_is_done(
    processor: SignalProcessor[dict[str, Any]],
) -> None:
    heard: list[int] = []
    first = records(search("e1", at("10:00")), search("e2", at("10:00")))
    second = records(b"{broken", search("e3", at("10:00")), search("e4", at("10:00", day=27)))

    unit = compute_unit(processor, iter([first, second]), WINDOW, progress=heard.append)

    assert heard == [2, 3]
    assert unit.read == 5 and sorted(unit.rows) == ["e1", "e2", "e3"]


# Each generated event: (id, hour relative to 2026-11-26 00:00, valid?). Hours -3..26 put some
# events on either side of the range; a small id alphabet makes repeats common.
EVENTS = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(-3, 26), st.booleans()), max_size=25
)


@settings(max_examples=80, deadline=None)
@given(EVENTS)
def test_rows_are_the_last_valid_version_of_each_event_in_the_range(
    processor: SignalProcessor[dict[str, Any]], events: list[tuple[str, int, bool]]
) -> None:
    raws = [
        search(
            event_id,
            (DAY + timedelta(hours=hour)).isoformat(),
            query=f"q{index}",
            guests=2 if valid else 0,  # the suite wants 1 to 16 guests
        )
        for index, (event_id, hour, valid) in enumerate(events)
    ]
    expected: dict[str, tuple[datetime, str]] = {}
    for index, (event_id, hour, valid) in enumerate(events):
        if valid and 0 <= hour < 24:
            expected[event_id] = (DAY + timedelta(hours=hour), f"q{index}")

    unit = compute_unit(processor, [records(*raws)] if raws else [], WINDOW)

    assert {k: (row["event_ts"], row["query"]) for k, row in unit.rows.items()} == expected
    inside = [0 <= hour < 24 for _, hour, _ in events]
    assert len(unit.rejects) == sum(
        1 for (*_, valid), ok in zip(events, inside, strict=True) if ok and not valid
    )
    assert unit.outside == inside.count(False)
    assert unit.read == len(events)


# --- stored_fields ---------------------------------------------------------------------------


def test_stored_fields_are_the_features_as_a_reader_decodes_them() -> None:
    row = {
        "event_id": "e1",
        "price": 80.5,
        "tags": ("a", "b"),
        "seen_at": datetime(2026, 11, 26, 17, 0, tzinfo=UTC),
        "user_id": 3,
    }

    fields = stored_fields(row, ["price", "tags", "seen_at", "missing"])

    assert fields == {
        "price": 80.5,
        "tags": ["a", "b"],
        "seen_at": "2026-11-26T17:00:00+00:00",
        "missing": None,
    }
    assert list(fields) == ["price", "tags", "seen_at", "missing"]  # features' order, no others


# --- offline rows ---------------------------------------------------------------------------

KINDS = {"city": "string", "guests": "int"}
V1 = to_micros(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
V2 = to_micros(datetime(2026, 11, 28, 1, 0, tzinfo=UTC))


def signal_row(event_id: str, clock: str = "10:00", day: int = 26, **changes: Any) -> dict:
    row = {"user_id": 4, "event_id": event_id, "event_ts": moment(clock, day), "city": "Paris"}
    return {**row, "guests": 2, **changes}


def write_offline(folder: Path, rows: Sequence[dict[str, Any]], version: int) -> list[Path]:
    parts = ParquetParts(folder, signal_offline_schema(KINDS))
    parts.add(signal_offline_rows(rows, KINDS, version))
    return parts.flush()


def test_the_offline_schema_holds_identity_times_and_each_field_by_kind() -> None:
    schema = signal_offline_schema(
        {"city": "string", "guests": "int", "price": "float", "ok": "bool", "at": "timestamp"}
    )

    moment_type = pa.timestamp("us", tz="UTC")
    assert list(zip(schema.names, schema.types, strict=True)) == [
        ("user_id", pa.int64()),
        ("event_id", pa.string()),
        ("event_ts", moment_type),
        (CREATED_COLUMN, moment_type),
        ("city", pa.string()),
        ("guests", pa.int64()),
        ("price", pa.float64()),
        ("ok", pa.bool_()),
        ("at", moment_type),
    ]


def test_offline_rows_read_times_from_text_or_datetimes_and_record_the_version() -> None:
    kinds = {"city": "string", "at": "timestamp"}
    rows = [
        {"user_id": "4", "event_id": 7, "event_ts": "2026-11-26T17:00:00.5Z", "city": "Rome"},
        {"user_id": 5, "event_id": "e2", "event_ts": moment("18:00"), "at": "2026-11-26T19:00Z"},
        {"user_id": 6, "event_id": "e3", "event_ts": moment("18:00"), "at": 1_795_719_600.25},
        {
            "user_id": 7,
            "event_id": "e4",
            "event_ts": moment("18:00"),
            "at": "2026-11-26T20:00+01:00",
        },
    ]

    out = signal_offline_rows(rows, kinds, version=V1)

    assert out[0] == {
        "user_id": 4,
        "event_id": "7",
        "event_ts": datetime(2026, 11, 26, 17, 0, 0, 500_000, tzinfo=UTC),
        "created_ts": from_micros(V1),
        "city": "Rome",
        "at": None,
    }
    assert [row["at"] for row in out[1:]] == [
        moment("19:00"),
        datetime(2026, 11, 26, 19, 0, 0, 250_000, tzinfo=UTC),  # epoch seconds
        moment("19:00"),  # converted to UTC
    ]
    assert [row["city"] for row in out[1:]] == [None, None, None]  # a missing field is null
    assert all(row["event_ts"].tzinfo is not None for row in out)
    assert "query" not in signal_offline_rows([signal_row("e1", query="x")], KINDS, V1)[0]


@pytest.fixture
def tokyo_clock() -> Iterator[None]:
    """The process's local time zone set to Asia/Tokyo (UTC+9) for the test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_a_zoneless_timestamp_field_does_not_depend_on_the_machines_time_zone(
    tokyo_clock: None,
) -> None:
    # Naive times are UTC everywhere else (versions.to_micros, raw_history's columns layout);
    # the offline row must not shift by the zone of whichever machine runs the job.
    row = {"user_id": 4, "event_id": "e1", "event_ts": moment("17:00"), "at": "2026-11-26T19:00"}

    [out] = signal_offline_rows([row], {"at": "timestamp"}, version=V1)

    assert out["at"] == moment("19:00")


def test_the_newest_created_ts_of_an_event_is_its_offline_version(tmp_path: Path) -> None:
    write_offline(tmp_path, [signal_row("e1", city="Paris")], V1)
    write_offline(tmp_path, [signal_row("e1", city="Rome"), signal_row("e2")], V2)
    write_offline(tmp_path, [signal_row("e1", city="Oslo")], V1 + 1)  # written later, older

    newest = latest_offline_versions(tmp_path, ["2026-11-26"], ["user_id", "event_ts", "city"])

    assert newest == {
        "e1": (V2, {"user_id": 4, "event_ts": moment("10:00"), "city": "Rome"}),
        "e2": (V2, {"user_id": 4, "event_ts": moment("10:00"), "city": "Paris"}),
    }


def test_offline_versions_come_only_from_the_given_days(tmp_path: Path) -> None:
    write_offline(tmp_path, [signal_row("e1"), signal_row("e2", day=27)], V1)

    assert list(latest_offline_versions(tmp_path, ["2026-11-27"], ["city"])) == ["e2"]
    assert latest_offline_versions(tmp_path, ["2026-11-30"], ["city"]) == {}
    assert latest_offline_versions(tmp_path / "nowhere", ["2026-11-26"], ["city"]) == {}


def test_offline_parts_still_being_written_are_not_read(tmp_path: Path) -> None:
    [done] = write_offline(tmp_path, [signal_row("e1")], V1)
    partial = ParquetParts(tmp_path / "scratch", signal_offline_schema(KINDS))
    partial.add(signal_offline_rows([signal_row("e1", city="Oslo")], KINDS, V2))
    [written] = partial.flush()
    day = tmp_path / "2026-11-26"
    hidden = [day / f".{written.name}", day / "_temporary" / "part-1.parquet"]
    for path in hidden:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(written.read_bytes())

    assert part_files(day) == [done]
    assert latest_offline_versions(tmp_path, ["2026-11-26"], ["city"]) == {
        "e1": (V1, {"city": "Paris"})
    }


def test_part_files_of_a_folder_are_sorted_and_of_a_file_are_the_file(tmp_path: Path) -> None:
    files = [tmp_path / "b" / "part-2.parquet", tmp_path / "a" / "part-1.parquet"]
    for path in [*files, tmp_path / "a" / "notes.txt"]:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")

    assert part_files(tmp_path) == sorted(files)
    assert part_files(files[0]) == [files[0]]


def test_new_offline_rows_are_the_changed_and_the_unknown_events(tmp_path: Path) -> None:
    write_offline(tmp_path, [signal_row("same"), signal_row("changed"), signal_row("moved")], V1)
    computed = [
        signal_row("same"),
        signal_row("changed", guests=3),
        signal_row("moved", clock="11:00"),  # same day, another event time
        signal_row("unknown", day=27),
    ]

    fresh = new_offline_rows(tmp_path, KINDS, computed, V2)

    assert [row["event_id"] for row in fresh] == ["changed", "moved", "unknown"]
    assert {row[CREATED_COLUMN] for row in fresh} == {from_micros(V2)}
    assert fresh[0]["guests"] == 3 and fresh[1]["event_ts"] == moment("11:00")


def test_an_event_is_compared_with_its_newest_offline_version_only(tmp_path: Path) -> None:
    # v1 Paris, then a correction to Rome at v2: computing Paris again is a new version.
    write_offline(tmp_path, [signal_row("e1")], V1)
    write_offline(tmp_path, [signal_row("e1", city="Rome")], V2)

    assert new_offline_rows(tmp_path, KINDS, [signal_row("e1", city="Rome")], V2 + 1) == []
    [fresh] = new_offline_rows(tmp_path, KINDS, [signal_row("e1")], V2 + 1)
    assert (fresh["city"], fresh[CREATED_COLUMN]) == ("Paris", from_micros(V2 + 1))


def test_a_second_pass_over_what_it_wrote_finds_nothing_new(tmp_path: Path) -> None:
    computed = [signal_row("e1"), signal_row("e2", day=27, guests=None)]
    fresh = new_offline_rows(tmp_path / "signals", KINDS, computed, V1)
    parts = ParquetParts(tmp_path / "signals", signal_offline_schema(KINDS))
    parts.add(fresh)
    parts.flush()

    assert len(fresh) == 2
    assert new_offline_rows(tmp_path / "signals", KINDS, computed, V2) == []


# --- BackfillSummary ------------------------------------------------------------------------


def test_totals_count_only_the_units_this_run_processed() -> None:
    earlier = UnitResult("date=2026-11-25", read=100, rejected=9, rows=80, offline_rows=80)
    now = UnitResult(
        "date=2026-11-26",
        read=10,
        rejected=1,
        dropped=2,
        outside=3,
        rows=4,
        store_versions=3,
        offline_rows=4,
        beyond_retention=1,
    )
    summary = BackfillSummary("search", [earlier, now], skipped=[earlier.unit], seconds=4.0)

    assert summary.totals() == {
        "read": 10,
        "rejected": 1,
        "dropped": 2,
        "outside": 3,
        "rows": 4,
        "store_versions": 3,
        "offline_rows": 4,
        "beyond_retention": 1,
    }
    summary_json = summary.to_dict()
    assert json.loads(json.dumps(summary_json)) == summary_json
    assert summary_json == {
        "signal": "search",
        "units": 2,
        "skipped_units": 1,
        **summary.totals(),
        "seconds": 4.0,
        "events_per_second": 2.5,
    }


def test_a_run_that_took_no_time_has_no_rate() -> None:
    summary = BackfillSummary("search", [UnitResult("u", read=3)], skipped=[], seconds=0.0)
    assert summary.to_dict()["events_per_second"] is None
    assert BackfillSummary("search", [], [], 1.23456).to_dict()["seconds"] == 1.235


# --- reconcile.compare ----------------------------------------------------------------------


def test_compare_sorts_every_event_into_one_kind() -> None:
    stream = {"same": 1, "changed": {"city": "Paris"}, "only_stream": 3}
    batch = {"same": 1, "changed": {"city": "Rome"}, "only_batch": 4}

    report = compare(stream, batch)

    assert (report.compared, report.matched, report.differences) == (4, 1, 3)
    assert report.counts == {"missing_in_stream": 1, "missing_in_batch": 1, "different": 1}
    assert report.examples == [
        Difference("different", "changed", {"city": "Paris"}, {"city": "Rome"}),
        Difference("missing_in_stream", "only_batch", None, 4),
        Difference("missing_in_batch", "only_stream", 3, None),
    ]
    assert report.to_dict()["examples"][0] == {
        "kind": "different",
        "event_id": "changed",
        "stream": {"city": "Paris"},
        "batch": {"city": "Rome"},
    }


def test_compare_keeps_at_most_the_asked_number_of_examples_but_counts_all() -> None:
    stream = {f"e{i:02d}": i for i in range(20)}

    report = compare(stream, {}, examples=3)

    assert report.counts["missing_in_batch"] == 20
    assert [d.event_id for d in report.examples] == ["e00", "e01", "e02"]
    assert compare(stream, {}, examples=0).examples == []
    assert compare({}, {}).to_dict() == {
        "compared": 0,
        "matched": 0,
        "missing_in_stream": 0,
        "missing_in_batch": 0,
        "different": 0,
        "examples": [],
    }


# --- raw history: writing -------------------------------------------------------------------


def raw(event_type: str, event_id: str, event_ts: Any) -> RawEvent:
    return RawEvent(event_type, {"event_id": event_id, "event_ts": event_ts})


def table_of(path: Path) -> dict[str, list[Any]]:
    return pq.read_table(path).to_pydict()


def test_history_is_written_per_topic_and_event_date_in_the_archive_layout(
    tmp_path: Path,
) -> None:
    events = [
        raw("search", "s1", at("23:00", day=25)),
        raw("search", "s2", at("01:00")),
        raw("booking", "b1", at("02:00")),
        raw("search", "s3", at("00:30", day=25)),  # out of order: back to the 25th
    ]

    written = write_history(events, tmp_path)

    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "events.booking/date=2026-11-26/part-00000.parquet",
        "events.search/date=2026-11-25/part-00000.parquet",
        "events.search/date=2026-11-26/part-00000.parquet",
    ]
    day25 = tmp_path / "events.search" / "date=2026-11-25" / "part-00000.parquet"
    assert pq.read_schema(day25).names == ["value", "topic", "partition", "offset", "timestamp"]
    assert table_of(day25) == {
        "value": [orjson.dumps(events[0].payload), orjson.dumps(events[3].payload)],
        "topic": ["events.search", "events.search"],
        "partition": [0, 0],
        "offset": [0, 2],  # offsets count per topic, across dates
        "timestamp": [moment("23:00", day=25), moment("00:30", day=25)],
    }
    booking = table_of(tmp_path / "events.booking" / "date=2026-11-26" / "part-00000.parquet")
    assert booking["offset"] == [0]


def test_an_event_with_an_unreadable_time_goes_with_the_event_before_it(tmp_path: Path) -> None:
    events = [
        raw("search", "s1", at("23:00", day=25)),
        raw("search", "bad", "yesterday"),
        raw("search", "naive", "2026-11-26T10:00:00"),
        raw("search", "s2", at("10:00")),
        raw("search", "null", None),
    ]

    write_history(events, tmp_path)

    day25 = table_of(tmp_path / "events.search" / "date=2026-11-25" / "part-00000.parquet")
    day26 = table_of(tmp_path / "events.search" / "date=2026-11-26" / "part-00000.parquet")
    assert [orjson.loads(v)["event_id"] for v in day25["value"]] == ["s1", "bad", "naive"]
    assert day25["timestamp"] == [moment("23:00", day=25)] * 3
    assert [orjson.loads(v)["event_id"] for v in day26["value"]] == ["s2", "null"]
    assert day25["value"][1] == b'{"event_id":"bad","event_ts":"yesterday"}'  # bytes as sent


def test_writing_history_again_adds_parts_and_never_overwrites(tmp_path: Path) -> None:
    [first] = write_history([raw("search", "s1", at("10:00"))], tmp_path)
    before = first.read_bytes()

    [second] = write_history([raw("search", "s2", at("11:00"))], tmp_path)

    assert (first.name, second.name) == ("part-00000.parquet", "part-00001.parquet")
    assert first.read_bytes() == before
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]


def test_a_large_date_is_split_into_parts_of_at_most_rows_per_file(tmp_path: Path) -> None:
    events = [raw("search", f"s{i}", at(f"10:0{i}")) for i in range(5)]

    written = write_history(events, tmp_path, rows_per_file=2)

    assert [p.name for p in written] == [f"part-0000{i}.parquet" for i in range(3)]
    assert [table_of(p)["offset"] for p in written] == [[0, 1], [2, 3], [4]]


# --- raw history: finding units -------------------------------------------------------------


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """events.search with one event on each of 2026-11-25, 26 and 27."""
    write_history(
        [
            raw("search", "s25", at("12:00", day=25)),
            raw("search", "s26", at("12:00")),
            raw("search", "s27", at("12:00", day=27)),
        ],
        tmp_path,
    )
    return tmp_path / "events.search"


def names(units: list[HistoryUnit]) -> list[str]:
    return [unit.name for unit in units]


@pytest.mark.parametrize(
    ("start", "end", "dates"),
    [
        (DAY, DAY + timedelta(days=1), ["26"]),  # the next midnight is not in the range
        (DAY + timedelta(hours=23), DAY + timedelta(days=1, microseconds=1), ["26", "27"]),
        (DAY - timedelta(microseconds=1), DAY + timedelta(hours=1), ["25", "26"]),
        (DAY - timedelta(days=10), DAY + timedelta(days=10), ["25", "26", "27"]),
        (DAY + timedelta(days=3), DAY + timedelta(days=4), []),
    ],
)
def test_only_date_partitions_overlapping_the_range_are_units(
    history: Path, start: datetime, end: datetime, dates: list[str]
) -> None:
    units = find_units(history, start, end)

    assert names(units) == [f"date=2026-11-{d}" for d in dates]
    assert all(unit.day is not None and unit.name == f"date={unit.day}" for unit in units)


def test_a_range_starting_in_another_zone_keeps_the_utc_date_it_starts_on(history: Path) -> None:
    #  start 2026-11-26 01:00+02:00 = 2026-11-25 23:00 UTC: the 25th's last hour is in the range
    start = datetime(2026, 11, 26, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    end = DAY + timedelta(hours=1)

    assert names(find_units(history, start, end)) == ["date=2026-11-25", "date=2026-11-26"]
    assert days_between(start, end) == ["2026-11-25", "2026-11-26"]


def test_a_date_partition_is_one_unit_of_all_its_files_in_order(history: Path) -> None:
    write_history([raw("search", "again", at("13:00"))], history.parent)

    [unit] = find_units(history, DAY, DAY + timedelta(days=1))

    folder = history / "date=2026-11-26"
    assert unit == HistoryUnit(
        "date=2026-11-26",
        (folder / "part-00000.parquet", folder / "part-00001.parquet"),
        DAY.date(),
    )


def test_lone_files_are_units_of_their_own_whatever_the_range(tmp_path: Path) -> None:
    write_history([raw("search", "s1", at("10:00"))], tmp_path / "dated")
    dumps = [tmp_path / "dumps" / "b.parquet", tmp_path / "dumps" / "a.parquet"]
    dumps[0].parent.mkdir()
    for path in dumps:
        pq.write_table(pa.table({"value": [b"{}"]}), path)
    far = DAY + timedelta(days=100)

    units = find_units(tmp_path, far, far + timedelta(days=1))

    assert units == [HistoryUnit(str(path), (path,)) for path in sorted(dumps)]
    assert names(find_units(tmp_path, DAY, DAY + timedelta(days=1))) == [
        "date=2026-11-26",  # dated units first
        *[str(path) for path in sorted(dumps)],
    ]


def test_a_source_may_be_a_file_or_a_glob(history: Path) -> None:
    file = history / "date=2026-11-27" / "part-00000.parquet"
    everything = (DAY - timedelta(days=9), DAY + timedelta(days=9))

    assert names(find_units(file, *everything)) == ["date=2026-11-27"]
    assert names(find_units(str(file), *everything)) == ["date=2026-11-27"]
    pattern = str(history / "date=2026-11-2[67]" / "*.parquet")
    assert names(find_units(pattern, *everything)) == ["date=2026-11-26", "date=2026-11-27"]
    recursive = str(history.parent / "**" / "part-*.parquet")
    assert len(find_units(recursive, *everything)) == 3


def test_hidden_files_are_parts_being_written_and_are_skipped(history: Path) -> None:
    folder = history / "date=2026-11-26"
    for name in [".part-00001.parquet", "_part-00002.parquet"]:
        (folder / name).write_bytes((folder / "part-00000.parquet").read_bytes())

    [unit] = find_units(history, DAY, DAY + timedelta(days=1))

    assert unit.files == (folder / "part-00000.parquet",)


@pytest.mark.parametrize(
    "source", ["nowhere", "nowhere/*.parquet", "empty"], ids=["missing", "glob", "empty-folder"]
)
def test_a_source_with_no_parquet_files_is_an_error_naming_it(tmp_path: Path, source: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not history")

    with pytest.raises(HistoryError, match=r"no Parquet files at .*--source"):
        find_units(tmp_path / source, DAY, DAY + timedelta(days=1))


def test_days_between_lists_every_utc_day_the_range_touches() -> None:
    assert days_between(DAY, DAY + timedelta(days=1)) == ["2026-11-26"]
    assert days_between(DAY + timedelta(hours=23), DAY + timedelta(days=1, seconds=1)) == [
        "2026-11-26",
        "2026-11-27",
    ]
    assert days_between(DAY, DAY + timedelta(microseconds=1)) == ["2026-11-26"]


# --- raw history: reading -------------------------------------------------------------------


def read_all(unit: HistoryUnit, batch_rows: int = 50_000) -> list[list[tuple[bytes, Any]]]:
    return list(read_unit(unit, batch_rows))


def test_the_archive_layout_gives_back_the_bytes_and_where_they_were(tmp_path: Path) -> None:
    events = [raw("search", f"s{i}", at(f"10:00:0{i}.123")) for i in range(3)]
    [path] = write_history(events, tmp_path)

    batches = read_all(HistoryUnit("u", (path,)), batch_rows=2)

    assert [len(batch) for batch in batches] == [2, 1]
    flat = [record for batch in batches for record in batch]
    assert [r for r, _ in flat] == [orjson.dumps(e.payload) for e in events]
    assert [p for _, p in flat] == [
        SourcePosition("events.search", 0, i, to_micros(moment(f"10:00:0{i}.123")) // 1000)
        for i in range(3)
    ]


def test_an_archive_of_values_only_is_positioned_by_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "dump.parquet"
    pq.write_table(pa.table({"value": ['{"a":1}', None, "{broken"]}), path)

    flat = [record for batch in read_all(HistoryUnit("u", (path,)), 2) for record in batch]

    assert flat == [
        (b'{"a":1}', SourcePosition(str(path), 0, 0)),
        (b"", SourcePosition(str(path), 0, 1)),
        (b"{broken", SourcePosition(str(path), 0, 2)),
    ]


def test_the_columns_layout_makes_each_row_an_event(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    table = pa.table(
        {
            "event_id": ["e1", "e2", "e3"],
            "user_id": [4, None, 6],
            "event_ts": pa.array(
                [moment("17:00:00.123"), moment("18:00"), moment("19:00")],
                pa.timestamp("ms", tz="UTC"),
            ),
            "seen_at": pa.array(
                [datetime(2026, 11, 26, 9, 30), None, None],  # noqa: DTZ001 (a naive column)
                pa.timestamp("us"),
            ),
            "price": [80.5, 1.0, None],
        }
    )
    pq.write_table(table, path)

    flat = [record for batch in read_all(HistoryUnit("u", (path,)), 2) for record in batch]

    assert [orjson.loads(r) for r, _ in flat] == [
        {
            "event_id": "e1",
            "user_id": 4,
            "event_ts": "2026-11-26T17:00:00.123000Z",
            "seen_at": "2026-11-26T09:30:00.000000Z",  # a zoneless column is UTC
            "price": 80.5,
        },
        {"event_id": "e2", "event_ts": "2026-11-26T18:00:00.000000Z", "price": 1.0},
        {"event_id": "e3", "user_id": 6, "event_ts": "2026-11-26T19:00:00.000000Z"},
    ]
    assert [p for _, p in flat] == [SourcePosition(str(path), 0, row) for row in range(3)]


def test_a_file_that_is_not_parquet_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_text("not parquet")
    [unit] = find_units(path, DAY, DAY + timedelta(days=1))

    with pytest.raises(HistoryError, match=r"broken\.parquet: not a readable Parquet file"):
        read_all(unit)


def test_history_written_then_read_runs_through_the_stream_code(
    tmp_path: Path, processor: SignalProcessor[dict[str, Any]]
) -> None:
    events = [
        RawEvent("search", search("e1", at("10:00"))),
        RawEvent("search", search("e1", at("11:00"), city="rome")),  # a replayed, corrected e1
        RawEvent("search", search("e2", at("12:00"), guests=40)),
        RawEvent("search", search("e3", at("00:00", day=27))),
    ]
    write_history(events, tmp_path)

    units = find_units(tmp_path / "events.search", WINDOW.start, WINDOW.end)
    [unit] = units
    computed = compute_unit(processor, read_unit(unit, batch_rows=2), WINDOW)

    assert (unit.name, list(computed.rows)) == ("date=2026-11-26", ["e1"])
    assert computed.rows["e1"]["city"] == "Rome"
    [reject] = computed.rejects
    assert isinstance(reject, DeadLetter)
    assert (reject.position.topic, reject.position.offset) == ("events.search", 2)


# --- backfill configs -----------------------------------------------------------------------


def test_every_plain_signal_has_a_backfill_config_and_join_signals_have_none() -> None:
    definitions = load_definitions(REPO)

    rendered = render_backfill_configs(definitions)

    assert sorted(rendered) == ["booking.json", "search.json", "view.json", "wishlist.json"]
    assert "wishlist_enriched.json" not in rendered and definitions.joins
    search_config = BackfillConfig.model_validate_json(rendered["search.json"])
    assert search_config == BackfillConfig(
        signal="search",
        suite="search.json",
        source="data/raw/events.search",
        work_dir="data/backfill/search",
    )
    for name, text in rendered.items():
        config = BackfillConfig.model_validate_json(text)
        spec = definitions.signal(config.signal)
        assert isinstance(spec, SignalSpec) and name == f"{spec.name}.json"
        assert config == backfill_config(spec)
        assert (validation_dir(REPO) / config.suite).is_file()


def test_backfill_configs_are_deterministic_and_round_trip(tmp_path: Path) -> None:
    rendered = render_backfill_configs(load_definitions(REPO))
    assert rendered == render_backfill_configs(load_definitions(REPO))
    text = rendered["view.json"]
    assert text.endswith("}\n") and list(json.loads(text)) == sorted(json.loads(text))

    path = tmp_path / "view.json"
    path.write_text(text)

    config = load_backfill_config(path)
    spec = load_definitions(REPO).signal("view")
    assert isinstance(spec, SignalSpec)
    assert config == backfill_config(spec)
    assert config.model_dump(mode="json") == json.loads(text)


def test_a_backfill_config_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "search.json"
    data = json.loads(render_backfill_configs(load_definitions(REPO))["search.json"])
    path.write_text(json.dumps({**data, "bootstrap": "localhost:9092"}))

    with pytest.raises(ValidationError, match="bootstrap"):
        load_backfill_config(path)
