"""The store and the Feast online store plugin on a real Redis Cluster of three masters.

The cluster is started for the session by ``tests/redis_cluster.py``; the store contract suite
runs on it too (``test_store_contract.py``, backend ``redis_cluster``). These tests cover what
only a cluster shows: where keys land, and the Feast, Python and HTTP read paths over it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from redis.cluster import RedisCluster

from tests.conftest import copy_repo, feast_apply, http_get, search_row, serving
from usp_feast import SignalClient
from usp_feast.membership import MembersIndex
from usp_feast.store import VersionedStore, connect, now_micros
from usp_feast.versions import Record

pytestmark = pytest.mark.integration

USERS = [str(u) for u in range(1, 31)]
VIEWS = ("search", "view", "wishlist", "booking")


@pytest.fixture
def cluster_store(redis_cluster_url: str) -> Iterator[VersionedStore]:
    client = connect(redis_cluster_url, cluster=True)
    store = VersionedStore(client, project=f"cluster_{uuid.uuid4().hex[:10]}")
    yield store
    store.drop_project()
    client.close()


def keys_by_master(store: VersionedStore) -> dict[str, str]:
    """Every key of the store's project, asked of each master directly: key → master."""
    client = store.client
    assert isinstance(client, RedisCluster)
    found: dict[str, str] = {}
    for master in client.get_primaries():
        for key in master.redis_connection.scan_iter(match=f"usp:{store.project}:*", count=1000):
            found[key.decode()] = master.name
    return found


def test_all_keys_of_a_user_live_in_one_slot_and_users_spread_over_masters(
    cluster_store: VersionedStore,
) -> None:
    store = cluster_store
    now = now_micros()
    for view in VIEWS:
        store.append(
            view,
            [(u, Record(f"{view}-{u}", now, now, {"n": 1})) for u in USERS],
            retention=timedelta(days=1),
        )
    store.put_current(
        "browse_session",
        [(u, {"started": now // 1000}, now // 1000 + 3_600_000) for u in USERS],
        now_ms=now // 1000,
    )

    found = keys_by_master(store)
    assert len(found) == len(USERS) * (len(VIEWS) + 1)
    for user in USERS:
        keys = [key for key in found if f"{{{user}}}" in key]
        assert len(keys) == len(VIEWS) + 1, keys  # four signals and the session's current state
        slots = {store.client.execute_command("CLUSTER KEYSLOT", key) for key in keys}
        assert len(slots) == 1, f"user {user}'s keys span slots {slots}"
        assert len({found[key] for key in keys}) == 1
    masters = set(found.values())
    assert len(masters) > 1, f"30 users all landed on one master ({masters})"


def test_scans_and_drops_visit_every_master(cluster_store: VersionedStore) -> None:
    store = cluster_store
    now = now_micros()
    store.append("search", [(u, Record("e", now, now, {})) for u in USERS])
    store.append("view", [(u, Record("e", now, now, {})) for u in USERS])
    assert sorted(store.entities("search"), key=int) == USERS
    assert store.drop_view("search") == len(USERS)
    assert list(store.entities("search")) == []
    assert [r.event_id for r in store.recent("view", "7")] == ["e"]
    assert store.drop_project() == len(USERS)
    assert keys_by_master(store) == {}


def test_a_batch_lands_whole_when_the_masters_lost_the_script(
    cluster_store: VersionedStore,
) -> None:
    # As after a master restart: the per-master pipelines get NOSCRIPT, and the calls they did
    # not complete go again through the cluster client, which loads the script.
    store = cluster_store
    now = now_micros()
    store.append("search", [("1", Record("warm", now, now, {}))])
    store.client.script_flush()
    assert store.append("search", [(u, Record(f"e{u}", now, now, {})) for u in USERS]) == 30
    assert all([r.event_id for r in store.recent("search", u)] == [f"e{u}"] for u in USERS[1:])
    assert store.append("search", [(u, Record(f"f{u}", now, now, {})) for u in USERS]) == 30
    assert sum(len(store.versions("search", u)) for u in USERS) == 61


def test_segment_members_index_on_the_cluster(cluster_store: VersionedStore) -> None:
    index = MembersIndex(cluster_store.client, project=cluster_store.project)
    index.apply(
        "trip",
        [
            {"user_id": u, "in_segment": True, "entered_at": 1000 + int(u), "expires_at": 9000}
            for u in USERS
        ],
    )
    index.apply("trip", [{"user_id": "30", "in_segment": False}])
    first = index.page("trip", limit=20, now_ms=2000)
    assert [m.user_id for m in first.members] == [str(u) for u in range(29, 9, -1)]
    listed, cursor = [m.user_id for m in first.members], first.next_cursor
    while cursor is not None:
        page = index.page("trip", cursor=cursor, limit=20, now_ms=2000)
        listed += [m.user_id for m in page.members]
        cursor = page.next_cursor
    assert listed == [str(u) for u in range(29, 0, -1)]
    assert index.drop("trip") == 2


@pytest.fixture(scope="module")
def cluster_repo(
    tmp_path_factory: pytest.TempPathFactory, redis_cluster_url: str
) -> Iterator[Path]:
    """The example repository on the cluster (``redis_type: redis_cluster``), applied."""
    project = f"cl_{uuid.uuid4().hex[:10]}"
    repo = copy_repo(
        tmp_path_factory.mktemp("cluster_repo"),
        redis_cluster_url,
        project,
        redis_type="redis_cluster",
    )
    feast_apply(repo)
    yield repo
    SignalClient.from_repo(repo).store.drop_project()


@pytest.fixture(scope="module")
def cluster_feature_store(cluster_repo: Path):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(cluster_repo))


# Users 1001..1012: their keys spread over the masters (checked in the query API test).
FEAST_USERS = list(range(1001, 1013))


@pytest.fixture(scope="module")
def pushed(cluster_feature_store) -> datetime:
    """Two searches per user pushed through Feast in one batch; returns the push time."""
    now = datetime.now(UTC)
    rows = [
        search_row(user, f"{user}-{i}", now - timedelta(minutes=5 - i), city)
        for user in FEAST_USERS
        for i, city in enumerate(["Paris", f"City{user}"])
    ]
    cluster_feature_store.push("search_push", pd.DataFrame(rows))
    return now


def test_feast_push_then_get_online_features_on_the_cluster(
    cluster_feature_store, pushed: datetime
) -> None:
    result = cluster_feature_store.get_online_features(
        features=["search:city", "search:event_id", "search_history:searches_24h"],
        entity_rows=[{"user_id": user} for user in [*FEAST_USERS, 999_999]],
    ).to_dict()
    assert result["city"] == [f"City{user}" for user in FEAST_USERS] + [None]
    assert result["event_id"] == [f"{user}-1" for user in FEAST_USERS] + [None]
    assert result["searches_24h"] == [2] * len(FEAST_USERS) + [0]


def test_the_query_api_reads_the_cluster(cluster_repo: Path, pushed: datetime) -> None:
    client = SignalClient.from_repo(cluster_repo)
    cluster = client.store.client
    assert isinstance(cluster, RedisCluster)
    keys = [client.store.key("search", str(user)) for user in FEAST_USERS]
    assert len({cluster.get_node_from_key(key).name for key in keys}) > 1
    for user in FEAST_USERS:
        events = client.recent(user, "search", within=timedelta(minutes=10))
        assert [e.event_id for e in events] == [f"{user}-1", f"{user}-0"]
    counts = client.aggregate(FEAST_USERS[0], "search", ["count"], timedelta(hours=1))
    assert counts["count"] == 2


@pytest.fixture(scope="module")
def cluster_api(cluster_repo: Path) -> Iterator[str]:
    """`usp serve` on the cluster repository; its base URL."""
    yield from serving(cluster_repo)


def test_the_http_api_reads_the_cluster(cluster_api: str, pushed: datetime) -> None:
    for user in FEAST_USERS:
        body = http_get(f"{cluster_api}/v1/users/{user}/signals/search?within=10m").json()
        assert [e["event_id"] for e in body["events"]] == [f"{user}-1", f"{user}-0"]
    assert http_get(f"{cluster_api}/healthz").status_code == 200
