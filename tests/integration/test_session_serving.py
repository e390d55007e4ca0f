"""Serving session engagements from real Redis: Feast, SignalClient, HTTP, training sets.

State and summaries are written the way the session job writes them (``EngagementSink``), so
these tests cover everything after the Flink operator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import http_get
from usp_feast import SignalClient
from usp_feast.engagements import Engagement, session_payload, window_payload
from usp_feast.feast_sink import EngagementSink
from usp_feast.keys import current_key
from usp_feast.store import now_micros
from usp_feast.windows import SlidingWindowLogic, WindowState

pytestmark = pytest.mark.integration

SESSION = "browse_session"
WINDOW = "views_10m"
MINUTE = 60_000
SESSION_FEATURES = [
    f"{SESSION}:{name}"
    for name in ("events", "top_cities", "listings_viewed", "started_at", "expires_at", "closed")
]


def now_ms() -> int:
    return now_micros() // 1000


def open_session(user: int, started: int, last: int, expires: int, events: int) -> dict:
    """A current-state message as the job sends it for a session that is open."""
    values = {
        "events": events,
        "top_cities": [["Lisbon", events - 1], ["Porto", 1]],
        "listings_viewed": events,
        "avg_price": 120.0,
        "last_listings": [7, 3],
        "duration_s": (last - started) / 1000,
    }
    current = session_payload(Engagement(started, last, expires, values))
    return {"user_id": str(user), "current": current}


def closed_session(user: int, started: int, last: int, events: int) -> dict:
    values = {
        "events": events,
        "top_cities": [["Porto", events]],
        "listings_viewed": 1,
        "avg_price": 80.0,
        "last_listings": [5],
        "duration_s": (last - started) / 1000,
    }
    engagement = Engagement(started, last, last + 30 * MINUTE, values, closed=True)
    return {"closed": engagement.to_row(SESSION, user)}


@pytest.fixture(scope="module")
def sessions(applied_repo: Path) -> EngagementSink:
    return EngagementSink(applied_repo, SESSION)


def read(feature_store, features: list[str], user: int) -> dict:
    found = feature_store.get_online_features(features, entity_rows=[{"user_id": user}]).to_dict()
    return {k: v[0] for k, v in found.items()}


def test_an_open_session_is_served_through_feast_with_its_top_values(
    sessions: EngagementSink, feature_store
) -> None:
    now = now_ms()
    sessions.write([open_session(8101, now - 5 * MINUTE, now - MINUTE, now + 29 * MINUTE, 4)])

    served = read(feature_store, SESSION_FEATURES, 8101)

    assert served["events"] == 4 and served["listings_viewed"] == 4
    assert served["top_cities"] == ["Lisbon", "Porto"]  # top_k serves the values, like Feast
    assert served["started_at"] == datetime.fromtimestamp((now - 5 * MINUTE) // 1000, UTC)
    assert served["closed"] is False


def test_a_session_past_its_gap_is_not_served_even_before_the_job_closes_it(
    sessions: EngagementSink, feature_store, client: SignalClient
) -> None:
    now = now_ms()
    sessions.write([open_session(8102, now - 40 * MINUTE, now - 29 * MINUTE, now + 1500, 2)])
    assert read(feature_store, SESSION_FEATURES, 8102)["events"] == 2
    assert client.session(8102, SESSION).current is not None

    time.sleep(1.6)  # the stored expiry passes; nothing is written

    assert read(feature_store, SESSION_FEATURES, 8102)["events"] is None
    assert client.session(8102, SESSION).current is None


def test_the_last_state_per_user_in_a_batch_wins_and_expired_state_is_not_written(
    sessions: EngagementSink, client: SignalClient, raw_redis
) -> None:
    now = now_ms()
    sessions.write(
        [
            open_session(8103, now - MINUTE, now - MINUTE, now + 29 * MINUTE, 1),
            open_session(8103, now - MINUTE, now, now + 30 * MINUTE, 2),
            open_session(8104, now - 60 * MINUTE, now - 45 * MINUTE, now - 15 * MINUTE, 3),
        ]
    )

    assert client.session(8103, SESSION).current.values["events"] == 2
    store = client.store
    assert raw_redis.exists(current_key(store.prefix, store.project, "8104", SESSION)) == 0
    ttl_ms = raw_redis.pttl(current_key(store.prefix, store.project, "8103", SESSION))
    assert 29 * MINUTE < ttl_ms <= 30 * MINUTE  # Redis drops the state by itself at expiry


def test_closed_summaries_are_history_newest_first_and_a_refire_is_a_new_version(
    sessions: EngagementSink, client: SignalClient
) -> None:
    now = now_ms()
    first, second = now - 5 * 60 * MINUTE, now - 2 * 60 * MINUTE
    sessions.write([closed_session(8105, first, first + 10 * MINUTE, 3)])
    sessions.write([closed_session(8105, second, second + 5 * MINUTE, 2)])
    sessions.write([closed_session(8105, first, first + 12 * MINUTE, 4)])  # a late event

    report = client.session(8105, SESSION)

    assert report.current is None
    assert [(e.started_ms, e.values["events"]) for e in report.recent] == [(second, 2), (first, 4)]
    assert report.to_dict()["recent"][0]["closed"] is True
    assert len(client.store.versions(SESSION, "8105")) == 3


def test_closed_summaries_make_point_in_time_training_rows(
    sessions: EngagementSink, feature_store
) -> None:
    now = now_ms()
    started = now - 3 * 60 * MINUTE
    sessions.write([closed_session(8106, started, started + 20 * MINUTE, 5)])
    sessions.checkpoint()  # the job does this before each checkpoint barrier
    closes = started + 50 * MINUTE  # the summary is known once the 30-minute gap has passed

    rows = pd.DataFrame(
        {
            "user_id": [8106, 8106],
            "event_timestamp": [
                pd.Timestamp(closes - MINUTE, unit="ms", tz="UTC"),
                pd.Timestamp(closes + MINUTE, unit="ms", tz="UTC"),
            ],
        }
    )
    found = feature_store.get_historical_features(
        rows, [f"{SESSION}:events", f"{SESSION}:top_cities"]
    ).to_df()
    before = found[found["event_timestamp"] < pd.Timestamp(closes, unit="ms", tz="UTC")]
    after = found[found["event_timestamp"] > pd.Timestamp(closes, unit="ms", tz="UTC")]

    # Before it closed nothing leaks. (Feast's file offline store drops an entity row that has
    # no earlier feature row rather than returning it with nulls; either way, no value.)
    assert before["events"].isna().all()
    assert list(after["events"]) == [5]
    assert list(after["top_cities"].iloc[0]) == ["Porto"]


def test_a_sliding_window_serves_the_window_ending_at_the_next_step(
    applied_repo: Path, feature_store, client: SignalClient
) -> None:
    spec = client.session_spec(WINDOW)
    logic, state = SlidingWindowLogic(spec.window_spec(), spec.aggregates()), WindowState()
    now = now_ms()
    event_ts = pd.Timestamp(now, unit="ms", tz="UTC").to_pydatetime()
    logic.add(
        state,
        {"listing_id": 7, "price": 99.0, "room_type": "entire_home", "event_ts": event_ts},
        now,
        -(2**62),
    )
    payload = window_payload(logic, state, now)
    EngagementSink(applied_repo, WINDOW).write([{"user_id": "8107", "current": payload}])

    served = read(feature_store, [f"{WINDOW}:count", f"{WINDOW}:max_price"], 8107)

    assert served == {"user_id": 8107, "count": 1, "max_price": 99.0}
    assert client.session(8107, WINDOW).to_dict()["kind"] == "window"


def test_http_returns_the_session_and_refuses_bad_queries(
    sessions: EngagementSink, api: str
) -> None:
    now = now_ms()
    sessions.write([open_session(8108, now - MINUTE, now, now + 30 * MINUTE, 2)])

    body = http_get(f"{api}/v1/users/8108/sessions/{SESSION}?recent=2").json()
    assert body["user_id"] == 8108 and body["kind"] == "session"
    assert body["current"]["values"]["events"] == 2 and body["recent"] == []

    unknown = http_get(f"{api}/v1/users/8108/sessions/nope")
    assert (
        unknown.status_code == 404 and "known sessions: browse_session" in unknown.json()["detail"]
    )
    for query in ("recent=101", "recent=-1", "recent=x", "limit=3"):
        response = http_get(f"{api}/v1/users/8108/sessions/{SESSION}?{query}")
        assert response.status_code == 400, query


def test_removing_a_session_view_drops_its_current_state(
    sessions: EngagementSink, feature_store, client: SignalClient, raw_redis
) -> None:
    import copy

    now = now_ms()
    store = client.store
    gone = copy.copy(feature_store.get_stream_feature_view(SESSION))
    gone.name = "gone_session"
    store.put_current("gone_session", [("1", {}, now + MINUTE)], now_ms=now)
    assert raw_redis.exists(current_key(store.prefix, store.project, "1", "gone_session")) == 1

    online = feature_store._get_provider().online_store
    online.update(feature_store.config, [gone], [], [], [], partial=False)

    assert raw_redis.exists(current_key(store.prefix, store.project, "1", "gone_session")) == 0
