"""Session engagement jobs end to end: raw events → signal jobs → session jobs → Redis → Feast.

One Flink job runs the ``search`` and ``view`` signals, the example definitions
``browse_session`` (30-minute gap) and ``views_10m`` (10-minute window every 5), and
``quick_browse`` (a 6-second gap, so sessions can be watched closing), on the real broker,
Redis and Feast.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest

from tests.e2e.harness import JOB_START_TIMEOUT, Job, ts, wait_for, workspace
from usp_feast import SignalClient
from usp_feast.kafka_io import consume_all, produce_events

pytestmark = pytest.mark.e2e

QUICK = """\
name: quick_browse
owner: e2e
signals: [search, view]
session:
  gap: 6s
features:
  events: count
  top_cities: top_k:city:2
  listings: count_distinct:listing_id
"""
MINUTE = 60_000


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict]:
    space = workspace(
        tmp_path_factory.mktemp("e2e_sessions"),
        stack.kafka,
        stack.redis,
        "ses",
        edit=lambda repo: (repo / "sessions" / "quick_browse.yaml").write_text(QUICK),
    )
    root, repo, prefix, streaming = space.root, space.repo, space.prefix, space.streaming
    names = (
        "search",
        "view",
        "session_browse_session",
        "session_views_10m",
        "session_quick_browse",
    )
    job = Job(
        repo, [streaming / f"{n}.json" for n in names], root / "checkpoints", root / "job.log"
    )
    job.start()
    from feast import FeatureStore

    client = SignalClient.from_repo(repo)
    yield {
        "prefix": prefix,
        "job": job,
        "client": client,
        "kafka": stack.kafka,
        "feast": FeatureStore(repo_path=str(repo)),
    }
    job.stop()
    client.store.drop_project()


def view(user: int, event_id: str, at: str, city: str, listing: int) -> tuple[str, bytes]:
    event = {
        "event_id": event_id,
        "event_ts": at,
        "user_id": user,
        "listing_id": listing,
        "city": city,
        "price": 100.0 + listing,
        "room_type": "entire_home",
    }
    return "events.listing_view", orjson.dumps(event)


def search(user: int, event_id: str, at: str, city: str) -> tuple[str, bytes]:
    event = {
        "event_id": event_id,
        "event_ts": at,
        "user_id": user,
        "query": "flat",
        "city": city,
        "checkin": "2027-03-01",
        "checkout": "2027-03-04",
        "guests": 2,
    }
    return "events.search", orjson.dumps(event)


def produce(pipeline: dict, *records: tuple[str, bytes]) -> None:
    prefix = pipeline["prefix"]
    produce_events(pipeline["kafka"], [(prefix + topic, raw) for topic, raw in records])


def online(pipeline: dict, features: list[str], user: int) -> dict:
    rows = pipeline["feast"].get_online_features(features, entity_rows=[{"user_id": user}])
    return {k: v[0] for k, v in rows.to_dict().items()}


def messages(pipeline: dict, topic: str) -> list[dict]:
    found = consume_all(pipeline["kafka"], pipeline["prefix"] + topic, idle_seconds=2)
    return [orjson.loads(m) for m in found]


def test_a_session_is_served_while_open_then_closes_with_a_summary(pipeline: dict) -> None:
    client, job = pipeline["client"], pipeline["job"]
    produce(
        pipeline,
        search(901, "s-1", ts(0.05), "Lisbon"),
        view(901, "v-1", ts(0.04), "Lisbon", 11),
        view(901, "v-2", ts(0.03), "Porto", 12),
        view(901, "v-3", ts(0.02), "Lisbon", 11),
    )
    features = ["browse_session:events", "browse_session:top_cities", "browse_session:closed"]

    wait_for(
        lambda: online(pipeline, features, 901)["events"] == 4,
        job,
        JOB_START_TIMEOUT,
        "the open session to show 4 events",
    )
    served = online(pipeline, features, 901)
    assert served["top_cities"] == ["Lisbon", "Porto"] and served["closed"] is False
    report = client.session(901, "browse_session")
    assert report.current.values["listings_viewed"] == 2  # search rows have no listing
    assert report.current.values["top_cities"] == [["Lisbon", 3], ["Porto", 1]]

    # quick_browse has a 6-second gap: with no more input, event time moves on with the
    # clock and the session closes with a summary in history and on the session topic.
    wait_for(
        lambda: client.session(901, "quick_browse").recent != (),
        job,
        60,
        "quick_browse to close",
    )
    quick = client.session(901, "quick_browse")
    assert quick.current is None  # expiry holds at read time
    [summary] = quick.recent
    assert summary.closed and summary.values["events"] == 4 and summary.values["listings"] == 2
    assert online(pipeline, ["quick_browse:events"], 901)["events"] is None
    published = [m for m in messages(pipeline, "usp.session.quick_browse") if m["user_id"] == 901]
    assert [(m["events"], m["closed"]) for m in published] == [(4, True)]


def test_a_session_summary_feeds_a_point_in_time_training_set(pipeline: dict) -> None:
    # Runs after the session of user 901 closed (the test above): its Parquet part is written
    # at the job's next checkpoint.
    client, job = pipeline["client"], pipeline["job"]
    [summary] = client.session(901, "quick_browse").recent
    closed_at = pd.Timestamp(summary.expires_ms, unit="ms", tz="UTC")
    rows = pd.DataFrame(
        {"user_id": [901, 901], "event_timestamp": [closed_at - pd.Timedelta("1s"), closed_at]}
    )

    def training() -> pd.DataFrame:
        store = pipeline["feast"]
        return store.get_historical_features(rows, ["quick_browse:events"]).to_df()

    wait_for(lambda: list(training()["events"].dropna()) == [4], job, 30, "the offline summary")
    found = training()
    assert found[found["event_timestamp"] < closed_at]["events"].isna().all()  # no leak


def test_a_sliding_window_counts_the_last_ten_minutes(pipeline: dict) -> None:
    job = pipeline["job"]
    minutes_ago = [14, 9, 6, 2, 1]
    produce(
        pipeline,
        *(view(902, f"w-{m}", ts(m), "Rome", m) for m in minutes_ago),
    )

    def expected() -> int:
        # The window served ends at the next 5-minute boundary after now.
        now = datetime.now(UTC)
        step = timedelta(minutes=5)
        end = datetime.fromtimestamp(
            (now.timestamp() // step.total_seconds() + 1) * step.total_seconds(), UTC
        )
        start = end - timedelta(minutes=10)
        produced = [now - timedelta(minutes=m) for m in minutes_ago]
        return sum(start <= moment < end for moment in produced)

    wait_for(
        lambda: online(pipeline, ["views_10m:count"], 902)["count"] == expected(),
        job,
        60,
        "views_10m to count the views of the current window",
    )
    assert online(pipeline, ["views_10m:max_price"], 902)["max_price"] is not None


def test_events_beyond_the_allowed_lateness_go_to_the_late_topic(pipeline: dict) -> None:
    client, job = pipeline["client"], pipeline["job"]
    # Event time has reached now (the tests above): a view from 3 hours ago is beyond every
    # definition's lateness, so no session takes it; each job reports it with the reason.
    produce(pipeline, view(903, "old-1", ts(180), "Oslo", 5), view(903, "new-1", ts(0), "Oslo", 5))

    wait_for(
        lambda: client.session(903, "browse_session").current is not None,
        job,
        60,
        "user 903's current view",
    )
    assert client.session(903, "browse_session").current.values["events"] == 1
    late = [
        m
        for m in messages(pipeline, "usp.late.session.browse_session")
        if orjson.loads(m["event"])["event_id"] == "old-1"
    ]
    assert len(late) == 1 and "beyond the allowed lateness" in late[0]["reason"]
