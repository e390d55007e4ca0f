"""The versioned store's contract (DESIGN.md section 5), run against every backend.

Timelines use minutes on the event-time axis (t) and the processing-time axis (v):

    t:  0    10    20    30
        e1   e2    e3          events, each possibly written several times (versions)
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster
from redis.commands.core import ScriptCommands
from redis.crc import key_slot

from usp_feast.store import MAX_APPEND_ROWS, VersionedStore
from usp_feast.versions import Record, collapse_versions, version_counts

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000_000  # an event-time origin, µs
MINUTE = 60_000_000
V0 = 1_790_000_100_000_000  # a processing-time origin, µs


def rec(event_id: str, t: int, v: int, **fields: object) -> Record:
    """Event ``event_id`` at minute ``t``, written at processing minute ``v``."""
    return Record(event_id, T0 + t * MINUTE, V0 + v * MINUTE, dict(fields))


def ids(records: list[Record]) -> list[str]:
    return [r.event_id for r in records]


def count_commands(store: VersionedStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """From now on, record the name of every command the store's client sends."""
    calls: list[tuple] = []
    original = store.client.execute_command

    def counting(*args, **kwargs):
        calls.append(args[:1])
        return original(*args, **kwargs)

    monkeypatch.setattr(store.client, "execute_command", counting)
    return calls


def count_round_trips(store: VersionedStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, record each round trip of the store: a command's name, or ``PIPELINE``."""
    trips: list[str] = []
    command, execute = store.client.execute_command, redis.client.Pipeline.execute

    def counting_command(*args, **kwargs):
        trips.append(args[0])
        return command(*args, **kwargs)

    def counting_execute(pipe, *args, **kwargs):
        trips.append("PIPELINE")
        return execute(pipe, *args, **kwargs)

    monkeypatch.setattr(store.client, "execute_command", counting_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    return trips


def append_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], int]]:
    """From now on, record the keys and row count of every append script call, alone or
    pipelined (``append.lua`` arguments: cutoff, expiry, then per key n and n pairs)."""
    calls: list[tuple[list[str], int]] = []
    evalsha = ScriptCommands.evalsha

    def recording(client, sha, numkeys, *keys_and_args):
        keys, args = keys_and_args[:numkeys], keys_and_args[numkeys + 2 :]
        rows, at = 0, 0
        for _ in keys:
            rows += int(args[at])
            at += 1 + 2 * int(args[at])
        calls.append(([k if isinstance(k, str) else k.decode() for k in keys], rows))
        return evalsha(client, sha, numkeys, *keys_and_args)

    monkeypatch.setattr(ScriptCommands, "evalsha", recording)
    return calls


def masters(store: VersionedStore, keys: list[str]) -> int:
    """How many masters hold ``keys``: 1 on standalone Redis."""
    if not isinstance(store.client, RedisCluster):
        return 1
    return len({store.client.get_node_from_key(key).name for key in keys})


def test_writes_append_versions_and_never_overwrite(store: VersionedStore) -> None:
    # e1 written at v=0, corrected at v=5: both versions stay in Redis.
    store.append("search", [("42", rec("e1", 0, 0, city="Paris"))])
    store.append("search", [("42", rec("e1", 0, 5, city="Rome"))])
    raw = store.client.zrange(store.key("search", "42"), 0, -1)
    assert len(raw) == 2
    assert any(b"Paris" in m for m in raw) and any(b"Rome" in m for m in raw)


def test_replay_adds_versions_but_readers_see_each_event_once(store: VersionedStore) -> None:
    batch = [("42", rec(f"e{i}", i, 0, n=i)) for i in range(5)]
    store.append("search", batch)
    first = store.recent("search", "42", limit=50)
    replay = [(u, Record(r.event_id, r.event_ts, V0 + MINUTE, r.fields)) for u, r in batch]
    store.append("search", replay)
    second = store.recent("search", "42", limit=50)
    assert ids(second) == ids(first) == ["e4", "e3", "e2", "e1", "e0"]
    assert [r.fields for r in second] == [r.fields for r in first]
    assert len(store.versions("search", "42")) == 10


def test_newest_version_wins(store: VersionedStore) -> None:
    store.append("view", [("7", rec("e1", 0, 0, price=100)), ("7", rec("e1", 0, 3, price=120))])
    store.append("view", [("7", rec("e1", 0, 1, price=110))])  # older version arriving late
    (only,) = store.recent("view", "7", limit=10)
    assert only.fields == {"price": 120}
    assert only.version == V0 + 3 * MINUTE


def test_as_of_returns_what_was_known_then(store: VersionedStore) -> None:
    #   e1: v=0 price 100, v=10 price 90 (correction)     e2: first written at v=20
    store.append("view", [("7", rec("e1", 0, 0, price=100))])
    store.append("view", [("7", rec("e1", 0, 10, price=90))])
    store.append("view", [("7", rec("e2", 5, 20, price=50))])
    at = lambda v: store.recent("view", "7", limit=10, as_of=V0 + v * MINUTE)  # noqa: E731
    assert [(r.event_id, r.fields["price"]) for r in at(5)] == [("e1", 100)]
    assert [(r.event_id, r.fields["price"]) for r in at(15)] == [("e1", 90)]
    assert [(r.event_id, r.fields["price"]) for r in at(25)] == [("e2", 50), ("e1", 90)]
    assert at(-1) == []


def test_event_time_range_and_last_n(store: VersionedStore) -> None:
    store.append("search", [("42", rec(f"e{t}", t, 0)) for t in range(0, 60, 10)])
    assert ids(store.recent("search", "42", limit=2)) == ["e50", "e40"]
    window = store.recent("search", "42", since=T0 + 15 * MINUTE, until=T0 + 40 * MINUTE)
    assert ids(window) == ["e40", "e30", "e20"]


def test_last_n_counts_distinct_events_not_versions(store: VersionedStore) -> None:
    # Each of 3 events has 30 versions: limit=3 must still return 3 distinct events.
    rows = [("42", rec(f"e{t}", t, v)) for t in range(3) for v in range(30)]
    store.append("search", rows)
    assert ids(store.recent("search", "42", limit=3)) == ["e2", "e1", "e0"]


def test_retention_trims_old_events_and_expires_idle_keys(store: VersionedStore) -> None:
    now = T0 + 100 * MINUTE
    store.append(
        "search",
        [("42", rec("old", 0, 0)), ("42", rec("new", 95, 0))],
        retention=timedelta(minutes=30),
        now=now,
    )
    assert ids(store.versions("search", "42")) == ["new"]
    ttl_ms = store.client.pttl(store.key("search", "42"))
    assert 0 < ttl_ms <= 31 * 60 * 1000


def test_latest_honours_ttl_at_read_even_without_new_events(store: VersionedStore) -> None:
    store.append("search", [("42", rec("e1", 0, 0, q="x")), ("43", rec("e2", 50, 0, q="y"))])
    fresh_since = T0 + 30 * MINUTE  # a TTL that e1 has outlived but e2 has not
    latest = store.latest("search", ["42", "43", "44"], since=fresh_since)
    assert latest[0] is None
    assert latest[1] is not None and latest[1].event_id == "e2"
    assert latest[2] is None


def test_latest_is_newest_event_at_its_newest_version(store: VersionedStore) -> None:
    store.append(
        "search",
        [("42", rec("e1", 0, 0)), ("42", rec("e2", 10, 0, q="a")), ("42", rec("e2", 10, 4, q="b"))],
    )
    (latest,) = store.latest("search", ["42"])
    assert latest is not None and (latest.event_id, latest.fields) == ("e2", {"q": "b"})


def test_all_keys_of_a_user_share_one_cluster_slot(store: VersionedStore) -> None:
    keys = [store.key(view, "42") for view in ("search", "view", "wishlist", "booking")]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_recent_is_one_round_trip(store: VersionedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append("search", [("42", rec(f"e{i}", i, v)) for i in range(20) for v in range(3)])
    store.recent("search", "42", limit=5)  # first call loads the script into Redis
    calls = count_commands(store, monkeypatch)
    assert len(store.recent("search", "42", limit=5, as_of=V0 + MINUTE)) == 5
    assert calls == [("EVALSHA",)]


def test_a_batch_over_many_keys_is_one_round_trip_per_master(
    store: VersionedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Standalone: one script call. Redis Cluster: a call per hash slot (50 users, ~50 slots),
    # pipelined so each master holding some of them is waited for once.
    store.append("search", [("1", rec("warm", 0, 0))])  # first call loads the script
    trips = count_round_trips(store, monkeypatch)
    batch = [(str(u), rec(f"e{u}-{i}", i, 0)) for u in range(1, 51) for i in range(3)]
    assert store.append("search", batch, retention=timedelta(days=3650), now=V0) == 150
    held_by = masters(store, [store.key("search", str(u)) for u in range(1, 51)])
    assert trips == (["PIPELINE"] * held_by if held_by > 1 else ["EVALSHA"])
    assert ids(store.recent("search", "50", limit=10)) == ["e50-2", "e50-1", "e50-0"]


def test_big_batches_are_split_so_no_call_holds_redis_long(
    store: VersionedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append("search", [("1", rec("warm", 0, 0))])
    calls = append_calls(monkeypatch)
    one_key = [("42", rec(f"e{i}", i, 0)) for i in range(2 * MAX_APPEND_ROWS + 500)]
    many_keys = [(str(u), rec(f"m{u}", 0, 0)) for u in range(100, 100 + MAX_APPEND_ROWS + 1)]
    assert store.append("search", one_key + many_keys) == len(one_key) + len(many_keys)
    assert sum(rows for _, rows in calls) == len(one_key) + len(many_keys)
    assert max(rows for _, rows in calls) <= MAX_APPEND_ROWS
    if isinstance(store.client, RedisCluster):
        # A call per hash slot: user 42's 2,500 rows take 3 calls, no call mixes slots.
        assert [keys for keys, _ in calls].count([store.key("search", "42")]) == 3
        assert all(len({key_slot(k.encode()) for k in keys}) == 1 for keys, _ in calls)
    else:
        # 3.5 times the bound in rows: calls are filled up to the bound, so 4 calls.
        assert len(calls) == 4
    assert len(store.versions("search", "42")) == len(one_key)
    assert ids(store.recent("search", str(100 + MAX_APPEND_ROWS), limit=5)) == [
        f"m{100 + MAX_APPEND_ROWS}"
    ]


def test_one_key_with_more_versions_than_one_zadd_takes(store: VersionedStore) -> None:
    # The append script splits ZADD arguments into chunks (Lua's stack is bounded).
    batch = [("42", rec(f"e{i}", i, 0)) for i in range(4_500)]
    assert store.append("search", batch) == 4_500
    assert len(store.versions("search", "42")) == 4_500


def test_drop_view_removes_only_that_view(store: VersionedStore) -> None:
    store.append("search", [("1", rec("a", 0, 0)), ("2", rec("b", 0, 0))])
    store.append("view", [("1", rec("c", 0, 0))])
    assert store.drop_view("search") == 2
    assert store.recent("search", "1") == []
    assert ids(store.recent("view", "1")) == ["c"]


histories = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.integers(min_value=0, max_value=40),  # version minute
    ),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=histories,
    as_of=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
    limit=st.integers(min_value=1, max_value=6),
)
def test_server_side_collapse_matches_the_reference_rule(
    store: VersionedStore, history: list[tuple[str, int]], as_of: int | None, limit: int
) -> None:
    # Each event id has a fixed event time; versions are arbitrary processing minutes.
    event_minute = {"a": 0, "b": 7, "c": 7, "d": 19, "e": 30}
    records = [rec(eid, event_minute[eid], v, written=v) for eid, v in history]
    entity = f"p{abs(hash((tuple(history), as_of, limit))) % 10**9}"
    store.append("prop", [(entity, r) for r in records])
    as_of_us = None if as_of is None else V0 + as_of * MINUTE
    expected = list(collapse_versions(records, as_of=as_of_us))[:limit]
    got = store.recent("prop", entity, limit=limit, as_of=as_of_us)
    assert [(r.event_id, r.version) for r in got] == [(r.event_id, r.version) for r in expected]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=histories,
    as_of=st.one_of(st.none(), st.integers(min_value=0, max_value=40)),
    limit=st.integers(min_value=1, max_value=6),
    oldest_first=st.booleans(),
)
def test_each_event_read_comes_with_its_version_count_by_the_reference_rule(
    store: VersionedStore,
    history: list[tuple[str, int]],
    as_of: int | None,
    limit: int,
    oldest_first: bool,
) -> None:
    event_minute = {"a": 0, "b": 7, "c": 7, "d": 19, "e": 30}
    records = [rec(eid, event_minute[eid], v, written=v) for eid, v in history]
    entity = f"n{abs(hash((tuple(history), as_of, limit, oldest_first))) % 10**9}"
    store.append("prop", [(entity, r) for r in records])
    as_of_us = None if as_of is None else V0 + as_of * MINUTE
    counted = store.recent_with_versions(
        "prop", entity, limit=limit, as_of=as_of_us, oldest_first=oldest_first
    )
    plain = store.recent("prop", entity, limit=limit, as_of=as_of_us, oldest_first=oldest_first)
    expected = version_counts(records, as_of=as_of_us)
    assert [r for r, _ in counted] == plain
    assert [(r.event_id, n) for r, n in counted] == [
        (r.event_id, expected[r.event_id]) for r in plain
    ]


def test_a_page_ending_inside_an_event_time_still_counts_every_version(
    store: VersionedStore,
) -> None:
    # Event time 0 holds a@5, b@3, b@2, b@1, a@0 (newest version first). limit=1 stops the
    # scan at a@5, before a@0: the count must still be 2.
    store.append("view", [("8", rec("a", 0, v)) for v in (0, 5)])
    store.append("view", [("8", rec("b", 0, v)) for v in (1, 2, 3)])
    [(first, count)] = store.recent_with_versions("view", "8", limit=1)
    assert (first.event_id, count) == ("a", 2)
    assert [(r.event_id, n) for r, n in store.recent_with_versions("view", "8", limit=5)] == [
        ("a", 2),
        ("b", 3),
    ]
    as_of = store.recent_with_versions("view", "8", limit=5, as_of=V0 + 2 * MINUTE)
    assert [(r.event_id, n) for r, n in as_of] == [("b", 2), ("a", 1)]


def test_a_page_ending_inside_an_event_time_longer_than_one_fetch_counts_every_version(
    store: VersionedStore,
) -> None:
    # Event time 0 holds a@100, b@70 ... b@1, a@0: the first fetch (64 members) ends inside
    # that time, before a@0, so the read must fetch the rest of it to count a's versions.
    store.append("view", [("9", rec("a", 0, v)) for v in (0, 100)])
    store.append("view", [("9", rec("b", 0, v)) for v in range(1, 71)])
    [(first, count)] = store.recent_with_versions("view", "9", limit=1)
    assert (first.event_id, first.version, count) == ("a", V0 + 100 * MINUTE, 2)
    both = store.recent_with_versions("view", "9", limit=2, oldest_first=True)
    assert sorted((r.event_id, n) for r, n in both) == [("a", 2), ("b", 70)]


def test_a_filtered_read_serves_the_newest_version_and_never_a_short_page(
    store: VersionedStore,
) -> None:
    from usp_feast.filters import parse_filter
    from usp_feast.store import MAX_FILTER_SCAN, ScanLimitError

    store.append(
        "search",
        [("5", rec("a", 1, 1, city="Paris")), ("5", rec("a", 1, 2, city="Rome"))]
        + [("5", rec(f"e{i}", 2 + i, 1, city="Oslo" if i % 2 else "Paris")) for i in range(10)],
    )
    paris = parse_filter('city == "Paris"')
    # "a" was Paris in version 1 and Rome since version 2: never served as Paris.
    assert ids(store.recent("search", "5", where=paris, limit=3)) == ["e8", "e6", "e4"]
    as_of_v1 = store.recent("search", "5", where=paris, limit=10, as_of=V0 + MINUTE)
    assert ids(as_of_v1) == ["e8", "e6", "e4", "e2", "e0", "a"]
    oldest = store.recent("search", "5", where=paris, limit=2, oldest_first=True)
    assert ids(oldest) == ["e0", "e2"]

    # More stored versions than one read may scan, and no match among them: refused, not short.
    store.append(
        "search", [("6", rec(f"n{i}", i, 1, city="Oslo")) for i in range(MAX_FILTER_SCAN + 10)]
    )
    with pytest.raises(ScanLimitError, match="MAX_FILTER_SCAN"):
        store.recent("search", "6", where=paris, limit=5)
    assert len(store.recent("search", "6", limit=5)) == 5  # an unfiltered page fills at once


def test_the_equality_screen_never_hides_a_match(store: VersionedStore) -> None:
    from usp_feast.filters import parse_filter

    store.append(
        "search",
        [
            ("7", rec("quoted", 1, 1, city='say "hi"', query="x")),
            ("7", rec("slash", 2, 1, city="a/b", query="x")),
            ("7", rec("unicode", 3, 1, city="Zürich", query="x")),
            ("7", rec("decoy", 4, 1, city="Rome", query='"city":"Paris"')),
            ("7", rec("paris", 5, 1, city="Paris", query="x")),
        ],
    )

    def where(text: str) -> list[str]:
        return ids(store.recent("search", "7", where=parse_filter(text), limit=10))

    assert where('city == "say \\"hi\\""') == ["quoted"]
    assert where('city == "a/b"') == ["slash"]
    assert where('city in ["Zürich", "Paris"]') == ["paris", "unicode"]
    assert where('city == "Paris"') == ["paris"]  # the decoy's query text is not its city
