"""Feast's own API over the plugin: apply, push, write_to_online_store, get_online_features,
and the history behind it through SignalClient — one flow on real Redis."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import search_row
from usp_feast import SignalClient

pytestmark = pytest.mark.integration


def online(feature_store, user: int) -> dict:
    return feature_store.get_online_features(
        features=["search:city", "search:guests", "search:event_id"],
        entity_rows=[{"user_id": user}],
    ).to_dict()


def test_push_appends_versions_and_online_read_returns_the_newest(feature_store, applied_repo):
    now = datetime.now(UTC)
    user = 1001
    feature_store.push(
        "search_push",
        pd.DataFrame(
            [
                search_row(user, "s1", now - timedelta(minutes=9), "Paris"),
                search_row(user, "s2", now - timedelta(minutes=2), "Rome", guests=4),
            ]
        ),
    )
    assert online(feature_store, user) == {
        "user_id": [user],
        "city": ["Rome"],
        "guests": [4],
        "event_id": ["s2"],
    }
    client = SignalClient.from_repo(applied_repo)
    events = client.recent(user, "search", within=timedelta(minutes=10))
    assert [(e.event_id, e.fields["city"]) for e in events] == [("s2", "Rome"), ("s1", "Paris")]

    # An older event pushed later does not become "latest"; it joins the history.
    feature_store.push(
        "search_push", pd.DataFrame([search_row(user, "s0", now - timedelta(minutes=5), "Oslo")])
    )
    assert online(feature_store, user)["city"] == ["Rome"]
    assert [e.event_id for e in client.recent(user, "search")] == ["s2", "s0", "s1"]


def test_write_to_online_store_replay_is_idempotent_for_readers(feature_store, applied_repo):
    now = datetime.now(UTC)
    user = 1002
    frame = pd.DataFrame(
        [search_row(user, f"r{i}", now - timedelta(minutes=i), "Lisbon") for i in range(5)]
    )
    feature_store.write_to_online_store("search", frame)
    client = SignalClient.from_repo(applied_repo)
    before = [e.event_id for e in client.recent(user, "search")]
    first_version = client.recent(user, "search")[0].processed_at
    feature_store.write_to_online_store("search", frame)  # full replay
    after = client.recent(user, "search")
    assert [e.event_id for e in after] == before == ["r0", "r1", "r2", "r3", "r4"]
    assert after[0].processed_at > first_version  # the replay is a newer version
    assert len(client.store.versions("search", str(user))) == 10
    # as_of before the replay still reads the first versions.
    at_first = client.recent(user, "search", as_of=first_version)
    assert [e.processed_at for e in at_first] == [first_version] * 5


def test_ttl_is_honoured_at_read_time_without_new_events(feature_store, applied_repo):
    # search has ttl 1d and retention 30d: a 2-day-old search is history, not an online value.
    user = 1003
    stale = datetime.now(UTC) - timedelta(days=2)
    feature_store.push("search_push", pd.DataFrame([search_row(user, "old", stale, "Rome")]))
    assert online(feature_store, user)["city"] == [None]
    events = SignalClient.from_repo(applied_repo).recent(user, "search")
    assert [e.event_id for e in events] == ["old"]


def test_retention_is_enforced_on_write(feature_store, applied_repo):
    # 40 days is beyond search's 30-day retention: nothing is kept.
    user = 1004
    ancient = datetime.now(UTC) - timedelta(days=40)
    feature_store.push("search_push", pd.DataFrame([search_row(user, "gone", ancient, "Rome")]))
    client = SignalClient.from_repo(applied_repo)
    assert client.store.versions("search", str(user)) == []


def test_feast_plan_after_apply_is_a_no_op(applied_repo: Path) -> None:
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "plan"], cwd=applied_repo, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No changes to registry" in result.stdout
    for verb in ("Created", "Updated", "Deleted"):
        assert verb not in result.stdout


def test_the_streaming_sink_stores_what_a_feast_push_stores(feature_store, applied_repo):
    from usp_feast.feast_sink import FeastSink

    at = datetime.now(UTC) - timedelta(minutes=1)
    feature_store.push("search_push", pd.DataFrame([search_row(1005, "same", at, "Oslo")]))
    FeastSink(applied_repo, "search").write([search_row(1006, "same", at, "Oslo")])
    client = SignalClient.from_repo(applied_repo)
    (pushed,) = client.store.versions("search", "1005")
    (streamed,) = client.store.versions("search", "1006")
    assert (streamed.event_id, streamed.event_ts) == (pushed.event_id, pushed.event_ts)
    assert {**streamed.fields, "user_id": None} == {**pushed.fields, "user_id": None}
    assert streamed.fields.keys() == pushed.fields.keys()
    assert online(feature_store, 1006)["city"] == online(feature_store, 1005)["city"] == ["Oslo"]
