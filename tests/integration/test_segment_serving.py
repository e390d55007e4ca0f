"""Serving segment membership from real Redis: Feast, SignalClient, HTTP and the members index.

Changes are written the way the segment job writes them (``SegmentSink``: history through
Feast, then the members index), so these tests cover everything after the Flink operator.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import http_get
from usp_feast import SignalClient
from usp_feast.feast_sink import SegmentSink
from usp_feast.membership import CursorError, MembersIndex
from usp_feast.segments import iso_ms
from usp_feast.store import connect, now_micros

pytestmark = pytest.mark.integration

SEGMENT = "active_trip_planner"
FEATURES = [f"segment_{SEGMENT}:{name}" for name in ("in_segment", "entered_at", "expires_at")]
HOUR = 3_600_000


def now_ms() -> int:
    return now_micros() // 1000


def change(user: int, kind: str, at: int, entered: int, expires: int, cause: str) -> dict:
    return {
        "segment": SEGMENT,
        "user_id": str(user),
        "change": kind,
        "event_id": cause,
        "event_ts": iso_ms(at),
        "in_segment": kind in ("entered", "renewed"),
        "entered_at": entered,
        "expires_at": expires,
        "reason": f"test {kind}",
    }


def enter_then_exit(sink: SegmentSink, user: int) -> int:
    """Write a membership from 10 days ago that a booking ended 3 days ago; returns now (ms)."""
    day = 24 * HOUR
    now = now_ms()
    entered, exited = now - 10 * day, now - 3 * day
    sink.write(
        [
            change(user, "entered", entered, entered, entered + 14 * day, "s1"),
            change(user, "exited", exited, entered, exited, "b1"),
        ]
    )
    return now


@pytest.fixture(scope="module")
def sink(applied_repo: Path) -> SegmentSink:
    return SegmentSink(applied_repo, SEGMENT)


def read(feature_store, user: int) -> dict:
    found = feature_store.get_online_features(FEATURES, entity_rows=[{"user_id": user}]).to_dict()
    return {k: v[0] for k, v in found.items()}


def test_feast_serves_the_current_membership(sink: SegmentSink, feature_store) -> None:
    # t-2h entered (expires t+14d) ── t-1h renewed ── read now: a member
    now = now_ms()
    entered = now - 2 * HOUR
    sink.write(
        [
            change(7001, "entered", entered, entered, entered + 336 * HOUR, "s1"),
            change(7001, "renewed", now - HOUR, entered, now - HOUR + 336 * HOUR, "s2"),
        ]
    )

    row = read(feature_store, 7001)

    assert row["in_segment"] is True
    assert row["entered_at"] == datetime.fromtimestamp(entered // 1000, tz=UTC)
    assert row["expires_at"] == datetime.fromtimestamp((now - HOUR + 336 * HOUR) // 1000, tz=UTC)


def test_an_expired_member_is_not_served_even_before_the_expiry_is_written(
    sink: SegmentSink, feature_store, client: SignalClient
) -> None:
    # entered now, expires in 1.5 s; nobody writes the expiry: reads still flip on time
    now = now_ms()
    sink.write([change(7002, "entered", now, now, now + 1500, "s1")])
    assert read(feature_store, 7002)["in_segment"] is True
    assert client.in_segment(7002, SEGMENT)
    assert "7002" in {m.user_id for m in client.members(SEGMENT, limit=1000).members}

    time.sleep(1.7)

    assert read(feature_store, 7002)["in_segment"] is False
    assert not client.in_segment(7002, SEGMENT)
    assert "7002" not in {m.user_id for m in client.members(SEGMENT, limit=1000).members}


def test_an_exit_is_served_at_once_and_history_answers_point_in_time(
    sink: SegmentSink, feature_store, client: SignalClient
) -> None:
    # d-10 entered ── d-3 exited (booking) ── now: not a member, but was one on d-5
    day = 24 * HOUR
    now = enter_then_exit(sink, 7003)

    assert read(feature_store, 7003)["in_segment"] is False
    assert not client.in_segment(7003, SEGMENT)
    at = datetime.fromtimestamp((now - 5 * day) / 1000, tz=UTC)
    assert client.in_segment(7003, SEGMENT, at=at)
    assert not client.in_segment(7003, SEGMENT, at=at - timedelta(days=6))  # before entering
    assert not client.in_segment(7003, SEGMENT, at=at + timedelta(days=2, hours=1))
    past = client.membership(7003, SEGMENT, at=at)
    assert past is not None and past.change == "entered"
    assert client.membership(7003, SEGMENT).reason == "test exited"


def test_rewriting_the_same_changes_changes_nothing_readers_see(
    sink: SegmentSink, client: SignalClient
) -> None:
    now = now_ms()
    changes = [change(7004, "entered", now, now, now + HOUR, "s1")]
    sink.write(changes)
    before = client.membership(7004, SEGMENT)
    sink.write(changes)  # a replay after a restart
    assert client.membership(7004, SEGMENT) == before
    assert len(client.store.recent(f"segment_{SEGMENT}", "7004")) == 1


def test_segments_lists_only_current_memberships(sink: SegmentSink, client: SignalClient) -> None:
    now = now_ms()
    sink.write([change(7005, "entered", now, now, now + HOUR, "s1")])
    assert [m.segment for m in client.segments(7005)] == [SEGMENT]
    assert client.segments(7999) == []
    with pytest.raises(ValueError, match="unknown segment 'nope'; known segments: "):
        client.in_segment(7005, "nope")
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        client.in_segment(7005, SEGMENT, at=datetime(2026, 1, 1))  # noqa: DTZ001 (on purpose)


@pytest.fixture
def index(redis_url: str) -> Iterator[MembersIndex]:
    members = MembersIndex(connect(redis_url), project=f"members_{uuid.uuid4().hex[:8]}")
    yield members
    members.drop("s")


def test_members_page_newest_first_over_ties_and_removals(index: MembersIndex) -> None:
    # 2,500 members; entry times repeat (groups of 7 share one) so ties cross page boundaries
    far = now_ms() + HOUR
    changes = [
        {"user_id": f"u{i:05d}", "in_segment": True, "entered_at": 1000 + i // 7, "expires_at": far}
        for i in range(2500)
    ]
    index.apply("s", changes)
    index.apply("s", [{**changes[10], "in_segment": False}])  # u00010 left

    seen, cursor, pages = [], None, 0
    while True:
        page = index.page("s", cursor=cursor, limit=300)
        seen += [m.user_id for m in page.members]
        pages += 1
        if page.next_cursor is None:
            break
        if pages == 3:  # the member the cursor points at leaves between two pages
            index.apply("s", [{"user_id": seen[-1], "in_segment": False}])
        cursor = page.next_cursor

    expected = sorted(
        (c["user_id"] for c in changes if c["user_id"] != "u00010"),
        key=lambda u: (-(1000 + int(u[1:]) // 7), [-ord(ch) for ch in u]),
    )
    assert seen == expected
    assert len(seen) == len(set(seen)) == 2499


def test_members_skip_expired_and_reject_foreign_cursors(index: MembersIndex) -> None:
    now = now_ms()
    index.apply(
        "s",
        [
            {"user_id": "a", "in_segment": True, "entered_at": 3, "expires_at": now - 1},
            {"user_id": "b", "in_segment": True, "entered_at": 2, "expires_at": now + HOUR},
        ],
    )
    assert [m.user_id for m in index.page("s", now_ms=now).members] == ["b"]
    assert index.count("s") == 2
    with pytest.raises(CursorError, match="not one this API returned"):
        index.page("s", cursor="!!bad!!")
    with pytest.raises(ValueError, match="limit must be between 1 and 1000"):
        index.page("s", limit=0)


def test_http_segments_of_a_user(api: str, sink: SegmentSink) -> None:
    now = now_ms()
    sink.write([change(7010, "entered", now, now, now + HOUR, "s1")])

    body = http_get(f"{api}/v1/users/7010/segments").json()
    assert body["user_id"] == 7010
    assert [s["segment"] for s in body["segments"]] == [SEGMENT]
    assert body["segments"][0]["in_segment"] is True

    one = http_get(f"{api}/v1/users/7010/segments/{SEGMENT}").json()
    assert one["change"] == "entered" and one["expires_at"] == iso_ms(now + HOUR)
    earlier = iso_ms(now - HOUR)
    assert http_get(f"{api}/v1/users/7010/segments/{SEGMENT}?at={earlier}").json() == {
        "user_id": 7010,
        "segment": SEGMENT,
        "in_segment": False,
        "change": None,
    }


def test_http_members_listing_pages_with_a_cursor(api: str, sink: SegmentSink) -> None:
    now = now_ms()
    users = range(7100, 7105)
    sink.write([change(u, "entered", now + u, now + u, now + HOUR, f"s{u}") for u in users])

    first = http_get(f"{api}/v1/segments/{SEGMENT}/members?limit=2").json()
    listed = [m["user_id"] for m in first["members"]]
    cursor = first["next_cursor"]
    while cursor:
        page = http_get(f"{api}/v1/segments/{SEGMENT}/members?limit=2&cursor={cursor}").json()
        listed += [m["user_id"] for m in page["members"]]
        cursor = page["next_cursor"]

    mine = [u for u in listed if u.startswith("71")]
    assert mine == [str(u) for u in reversed(users)]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/segments/nope/members", 404, "unknown segment 'nope'"),
        ("/v1/users/1/segments/nope", 404, "unknown segment 'nope'"),
        (f"/v1/segments/{SEGMENT}/members?cursor=zzz", 400, "cursor"),
        (f"/v1/segments/{SEGMENT}/members?limit=5000", 400, "limit must be"),
        ("/v1/users/1/segments?at=yesterday", 400, "at must be an ISO-8601 time"),
        ("/v1/users/1/segments?at=2026-01-01T00:00:00", 400, "at must carry a timezone"),
        ("/v1/users/1/segments?as_of=x", 400, "unknown query parameter 'as_of'"),
        ("/v1/users/0/segments", 400, "user_id must be positive"),
    ],
)
def test_bad_segment_queries_get_a_4xx_with_a_reason(
    api: str, path: str, status: int, words: str
) -> None:
    response = http_get(f"{api}{path}")
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_training_sets_join_membership_point_in_time(sink: SegmentSink, feature_store) -> None:
    # d-10 entered ── d-5 (a training row: member) ── d-3 exited ── d-1 (a row: not a member)
    import pandas as pd

    day = 24 * HOUR
    now = enter_then_exit(sink, 7201)
    sink.checkpoint()  # what the job does before each checkpoint barrier

    def moment(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    rows = pd.DataFrame(
        {"user_id": [7201, 7201], "event_timestamp": [moment(now - 5 * day), moment(now - day)]}
    )
    features = [f"segment_{SEGMENT}:in_segment", f"segment_{SEGMENT}:change"]
    found = feature_store.get_historical_features(rows, features).to_df()
    found = found.sort_values("event_timestamp")
    assert list(found["in_segment"]) == [True, False]
    assert list(found["change"]) == ["entered", "exited"]


def test_removing_a_segment_view_drops_its_members_index(
    feature_store, client: SignalClient
) -> None:
    # `feast apply` after a segment's YAML is deleted: the view's history and index go.
    import copy

    gone = copy.copy(feature_store.get_stream_feature_view(f"segment_{SEGMENT}"))
    gone.name = "segment_gone"
    gone.tags = {**gone.tags, "usp.segment": "gone"}
    index = client.members_index
    index.apply("gone", [{"user_id": "1", "in_segment": True, "entered_at": 1, "expires_at": 2}])
    assert index.count("gone") == 1

    online = feature_store._get_provider().online_store
    online.update(feature_store.config, [gone], [], [], [], partial=False)

    assert index.count("gone") == 0
