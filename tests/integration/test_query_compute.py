"""Query-time computation on real Redis: filters in the history script, projections, ordering,
aggregates and on-demand sessions, through the Python API and the HTTP API."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import http_get, serving
from usp_feast.filters import parse_filter
from usp_feast.query import LimitExceededError, QueryError, SignalClient
from usp_feast.versions import Record, collapse_versions

pytestmark = pytest.mark.integration

USER = 3001  # 40 views, one every 2 minutes, newest first: q0 (now - 1 min) ... q39
CITIES = ["Paris", "Rome", "Oslo", "Lisbon"]
ROOMS = ["entire_home", "private_room"]
SESSION_USER = 3002


def view(user: int, i: int, at: datetime, **changes: object) -> dict:
    return {
        "user_id": user,
        "event_id": f"q{i}",
        "event_ts": at,
        "listing_id": 500 + i,
        "city": CITIES[i % 4],
        "price": 50.0 + 10 * (i % 10),
        "room_type": ROOMS[i % 2],
        **changes,
    }


@pytest.fixture(scope="module")
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def client(applied_repo: Path, feature_store, now: datetime) -> SignalClient:
    rows = [view(USER, i, now - timedelta(minutes=1 + 2 * i)) for i in range(40)]
    feature_store.push("view_push", pd.DataFrame(rows))
    # A correction: q0's newest version is in Oslo, so a filter on Paris must not serve the
    # older Paris version of it.
    feature_store.push("view_push", pd.DataFrame([view(USER, 0, rows[0]["event_ts"], city="Oslo")]))
    # Session user: bursts at 60-55 min, 20-18 min and 2 min ago (gap 10m → 3 sessions).
    burst = [60, 58, 55, 20, 18, 2]
    feature_store.push(
        "view_push",
        pd.DataFrame(
            [view(SESSION_USER, i, now - timedelta(minutes=m)) for i, m in enumerate(burst)]
        ),
    )
    feature_store.push(
        "search_push",
        pd.DataFrame(
            [
                {
                    "user_id": SESSION_USER,
                    "event_id": "s1",
                    "event_ts": now - timedelta(minutes=19),
                    "query": "rome",
                    "city": "Rome",
                    "checkin": "2027-01-01",
                    "checkout": "2027-01-03",
                    "guests": 2,
                }
            ]
        ),
    )
    return SignalClient.from_repo(applied_repo)


def ids(events: list) -> list[str]:
    return [e.event_id for e in events]


def test_a_filter_is_evaluated_in_redis_and_still_fills_the_page(client: SignalClient) -> None:
    paris = client.recent(USER, "view", where='city == "Paris"', limit=5)
    # q0 was Paris, but its newest version moved to Oslo; every 4th view is Paris.
    assert ids(paris) == ["q4", "q8", "q12", "q16", "q20"]
    assert all(e.fields["city"] == "Paris" for e in paris)


def test_numeric_comparisons_membership_and_conjunctions(client: SignalClient) -> None:
    cheap = client.recent(USER, "view", where="price < 70 and listing_id >= 520", limit=50)
    assert ids(cheap) == [f"q{i}" for i in range(20, 40) if 50 + 10 * (i % 10) < 70]
    rooms = client.recent(USER, "view", where='room_type in ["private_room"]', limit=3)
    assert ids(rooms) == ["q1", "q3", "q5"]
    others = client.recent(USER, "view", where='city not in ["Paris", "Rome", "Oslo"]', limit=2)
    assert ids(others) == ["q3", "q7"]


def test_projection_and_oldest_first(client: SignalClient) -> None:
    events = client.recent(USER, "view", fields=["city"], order="oldest", limit=3)
    assert ids(events) == ["q39", "q38", "q37"]
    assert all(set(e.fields) <= {"city", "event_id"} for e in events)
    newest = client.recent(USER, "view", order="oldest", within=timedelta(minutes=4))
    assert ids(newest) == ["q1", "q0"]
    assert newest[-1].fields["city"] == "Oslo"  # oldest-first still serves the newest version


def test_the_redis_filter_agrees_with_the_python_filter(client: SignalClient) -> None:
    everything = list(collapse_versions(client.store.versions("view", str(USER))))
    by_time: list[Record] = sorted(everything, key=lambda r: r.event_ts, reverse=True)
    rng = random.Random(7)
    texts = []
    for _ in range(40):
        field, op, value = rng.choice(
            [
                ("city", "==", f'"{rng.choice(CITIES)}"'),
                ("city", "!=", f'"{rng.choice(CITIES)}"'),
                ("price", rng.choice(["<", "<=", ">", ">="]), str(rng.choice([50, 70.0, 95.5]))),
                ("listing_id", rng.choice(["==", "!=", ">"]), str(rng.randint(495, 545))),
                ("room_type", rng.choice(["in", "not in"]), f'["{rng.choice(ROOMS)}"]'),
            ]
        )
        texts.append(f"{field} {op} {value}")
    for first, second in zip(texts[::2], texts[1::2], strict=True):
        text = f"{first} and {second}"
        where = parse_filter(text)
        expected = [r.event_id for r in by_time if where.matches(r.fields)]
        assert ids(client.recent(USER, "view", where=text, limit=1000)) == expected, text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"where": 'colour == "red"'}, "unknown field 'colour'"),
        ({"where": 'price == "cheap"'}, "price is a float field"),
        ({"where": 'city > "M"'}, "operator '>' is not allowed for string field 'city'"),
        ({"where": "city = 'Paris'"}, "unexpected character"),
        ({"fields": ["city", "nope"]}, "unknown field 'nope' in fields"),
        ({"order": "random"}, "order must be 'newest' or 'oldest'"),
    ],
)
def test_bad_filters_and_projections_are_refused_with_a_reason(
    client: SignalClient, kwargs: dict, words: str
) -> None:
    with pytest.raises(QueryError, match=words.replace("(", r"\(")):
        client.recent(USER, "view", **kwargs)


def test_query_time_aggregates_over_a_window(client: SignalClient) -> None:
    result = client.aggregate(
        USER,
        "view",
        ["count", "count_distinct:city", "top_k:room_type:1", "max:price", "avg:price"],
        within=timedelta(minutes=20),
    )
    # Views q0..q9 are within 20 minutes (q0 at 1 min ... q9 at 19 min).
    assert result["count"] == 10
    assert result["count_distinct_city"] == 4
    assert result["top_k_room_type"] == [["entire_home", 5]]
    assert result["max_price"] == 140.0
    assert result["avg_price"] == pytest.approx(95.0)
    paris = client.aggregate(
        USER, "view", ["count"], within=timedelta(hours=2), where='city == "Paris"'
    )
    assert paris == {"count": 9}  # q4, q8, ..., q36 (q0 moved to Oslo)
    timed = client.aggregate(
        USER,
        "view",
        ["first_ts", "last_ts", "duration", "last_k:city:2"],
        within=timedelta(minutes=20),
    )
    span = datetime.fromisoformat(timed["last_ts"]) - datetime.fromisoformat(timed["first_ts"])
    assert timed["duration"] == span.total_seconds() == 18 * 60  # q9 at 19 min ... q0 at 1 min
    assert len(timed["last_k_city"]) == 2


def test_on_demand_sessions_merge_signals_by_event_time(client: SignalClient) -> None:
    sessions = client.sessions(SESSION_USER, ["view", "search"], gap=timedelta(minutes=10))
    assert [s.event_count for s in sessions] == [1, 3, 3]  # newest first
    assert sessions[1].signal_counts == {"view": 2, "search": 1}
    assert sessions[2].duration == timedelta(minutes=5)
    assert client.sessions(SESSION_USER, "view", gap=timedelta(minutes=1))[0].event_count == 1


def test_query_time_computation_is_bounded(client: SignalClient) -> None:
    with pytest.raises(LimitExceededError, match="7-day maximum"):
        client.sessions(USER, "view", gap=timedelta(minutes=30), within=timedelta(days=8))
    with pytest.raises(LimitExceededError, match="MAX_SIGNALS_MERGED"):
        client.aggregate(
            USER, ["view", *(f"s{i}" for i in range(8))], ["count"], timedelta(hours=1)
        )
    with pytest.raises(QueryError, match=r"avg needs|int or float"):
        client.aggregate(USER, "view", ["avg:city"], within=timedelta(hours=1))


@pytest.fixture(scope="module")
def api(applied_repo: Path, client: SignalClient) -> Iterator[str]:
    yield from serving(applied_repo)


def test_http_filter_projection_and_order(api: str) -> None:
    body = http_get(
        f'{api}/v1/users/{USER}/signals/view?where=city == "Paris"&fields=city,price&limit=2'
    ).json()
    assert [e["event_id"] for e in body["events"]] == ["q4", "q8"]
    assert set(body["events"][0]) == {
        "event_id",
        "event_ts",
        "processed_at",
        "versions",
        "city",
        "price",
    }


def test_http_aggregates_and_sessions(api: str) -> None:
    body = http_get(
        f"{api}/v1/users/{USER}/aggregates?signals=view&agg=count&agg=top_k:city:2&within=20m"
    ).json()
    assert body["aggregates"]["count"] == 10
    # q0..q9: Oslo 3 times (q0 corrected), Rome 3, Paris 2, Lisbon 2; ties: newest first.
    assert body["aggregates"]["top_k_city"] == [["Oslo", 3], ["Rome", 3]]
    sessions = http_get(
        f"{api}/v1/users/{SESSION_USER}/sessions?signals=view,search&gap=10m"
    ).json()
    assert [s["event_count"] for s in sessions["sessions"]] == [1, 3, 3]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("signals/view?where=nope == 1", 400, "unknown field 'nope'"),
        ("signals/view?where=guests >=", 400, "expected"),
        ("signals/view?fields=price,bogus", 400, "unknown field 'bogus'"),
        ("signals/view?order=sideways", 400, "order must be"),
        ("aggregates?signals=view&within=1h", 400, "at least one aggregate"),
        ("aggregates?signals=view&agg=count", 400, "within is required"),
        ("aggregates?signals=view&agg=median:price&within=1h", 400, "invalid aggregate"),
        ("aggregates?signals=nope&agg=count&within=1h", 404, "unknown signal 'nope'"),
        ("aggregates?signals=view&agg=count&within=30d", 422, "MAX_WINDOW"),
        ("sessions?signals=view", 400, "gap is required"),
        ("sessions?signals=view&gap=soon", 400, "gap: invalid duration"),
        ("sessions?signals=view&gap=10m&within=9d", 422, "7-day maximum"),
    ],
)
def test_http_bad_queries_get_a_4xx_naming_the_problem(
    api: str, path: str, status: int, words: str
) -> None:
    response = http_get(f"{api}/v1/users/{USER}/{path}")
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_feast_serves_query_features_from_history_with_no_job(
    feature_store, client: SignalClient, now: datetime
) -> None:
    user = 3003
    rows = [
        {
            "user_id": user,
            "event_id": f"s{i}",
            "event_ts": now - timedelta(minutes=10 * i + 1),
            "query": "q",
            "city": ["Paris", "Rome", "Oslo", "Paris"][i % 4],
            "checkin": "2027-01-01",
            "checkout": "2027-01-02",
            "guests": i % 3,
        }
        for i in range(12)  # one every 10 minutes, the last 1 h 51 min ago
    ]
    feature_store.push("search_push", pd.DataFrame(rows))
    features = [
        "search_history:distinct_cities_1h",
        "search_history:searches_24h",
        "search_history:top_cities_24h",
        "search_history:group_searches_24h",
        "search:city",
    ]
    result = feature_store.get_online_features(
        features=features, entity_rows=[{"user_id": user}, {"user_id": 999_999}]
    ).to_dict()
    # Within 1 h: s0..s5 → Paris, Rome, Oslo, Paris, Paris, Rome: 3 distinct cities.
    assert result["distinct_cities_1h"] == [3, 0]
    assert result["searches_24h"] == [12, 0]
    assert result["top_cities_24h"] == [["Paris", "Rome", "Oslo"], []]
    assert result["group_searches_24h"] == [4, 0]  # guests >= 2: s2, s5, s8, s11
    assert result["city"] == ["Paris", None]  # a regular feature in the same call
    expected = client.aggregate(user, "search", ["count_distinct:city"], timedelta(hours=1))
    assert result["distinct_cities_1h"][0] == expected["count_distinct_city"]
