"""Signal jobs end to end: real broker, real Flink (local mini-cluster), real Redis and Feast.

A scripted journey is produced to Kafka; the generated jobs validate, transform and store it.
Readers must see exactly the valid events, dead letters must carry their reasons, replays must
change nothing readers see, and a SIGKILL mid-stream must lose nothing.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.e2e.harness import JOB_START_TIMEOUT, Job, ts, wait_for, workspace
from usp_feast import SignalClient
from usp_feast.kafka_io import consume_all, produce_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict]:
    space = workspace(tmp_path_factory.mktemp("e2e"), stack.kafka, stack.redis, "signals")
    root, repo, prefix = space.root, space.repo, space.prefix
    signal_configs = [
        p
        for p in sorted((root / "streaming").glob("*.json"))
        if not p.name.startswith(("segment_", "session_"))
    ]
    job = Job(repo, signal_configs, root / "checkpoints", root / "job.log")
    job.start()
    client = SignalClient.from_repo(repo)
    yield {"repo": repo, "prefix": prefix, "job": job, "client": client, "kafka": stack.kafka}
    job.stop()
    client.store.drop_project()


def search(user: int, event_id: str, minutes_ago: float, city: str, **extra) -> dict:
    return {
        "event_id": event_id,
        "event_ts": ts(minutes_ago),
        "user_id": user,
        "query": "  Flat  NEAR centre ",
        "city": city,
        "checkin": "2027-01-10",
        "checkout": "2027-01-12",
        "guests": 2,
        **extra,
    }


def test_valid_events_are_stored_and_bad_ones_dead_lettered(pipeline: dict) -> None:
    prefix, client, job, kafka = (pipeline[k] for k in ("prefix", "client", "job", "kafka"))
    topic = f"{prefix}events.search"
    user = 501
    good = [search(user, f"g{i}", 30 - i, ["paris", "Rome ", "lisbon"][i % 3]) for i in range(6)]
    bad: list[tuple[str, bytes, str]] = [
        ("not json", b"{not json", "payload.json"),
        ("bad utf-8", b'{"event_id": "\xff\xfe"}', "payload.encoding"),
        ("oversized", orjson.dumps(search(user, "big", 1, "x" * 70_000)), "payload.size"),
        ("wrong type", orjson.dumps(search(user, "b1", 1, "Paris", guests="two")), "guests"),
        ("out of range", orjson.dumps(search(user, "b2", 1, "Paris", guests=40)), "guests"),
        (
            "missing field",
            orjson.dumps({k: v for k, v in search(user, "b3", 1, "P").items() if k != "city"}),
            "city",
        ),
        ("bad user", orjson.dumps(search(-4, "b4", 1, "Paris")), "user_id"),
    ]
    dlq_topic, signal_topic = f"{prefix}usp.dlq.search", f"{prefix}usp.signal.search"
    records = [(topic, orjson.dumps(e)) for e in good] + [(topic, raw) for _, raw, _ in bad]
    records.append((topic, orjson.dumps(good[0])))  # an exact duplicate
    produce_events(kafka, records)

    expected = [f"g{i}" for i in reversed(range(6))]
    wait_for(
        lambda: [e.event_id for e in client.recent(user, "search")] == expected,
        job,
        JOB_START_TIMEOUT,
        "the six valid searches to be readable",
    )
    events = client.recent(user, "search")
    assert events[0].fields["query"] == "flat near centre"  # the transform ran
    assert [e.fields["city"] for e in events[:3]] == ["Lisbon", "Rome", "Paris"]

    letters = [
        orjson.loads(r)
        for r in consume_all(kafka, dlq_topic, idle_seconds=3)
        if orjson.loads(r)["source"]["topic"] == topic
    ]
    assert len(letters) == len(bad)
    by_original = {base64.b64decode(d["original_base64"]): d for d in letters}
    for label, raw, words in bad:
        letter = by_original[raw]
        reasons = " ".join(
            f"{r['expectation']} {r['column']} {r['message']}" for r in letter["reasons"]
        )
        assert words in reasons, f"{label}: {reasons}"
        assert letter["source"]["offset"] >= len(good)

    published = [orjson.loads(r) for r in consume_all(kafka, signal_topic, idle_seconds=2)]
    mine = {
        r["event_id"] for r in published if r["user_id"] == user and r["event_id"].startswith("g")
    }
    assert mine == {f"g{i}" for i in range(6)}


def test_a_full_replay_changes_nothing_readers_see(pipeline: dict) -> None:
    prefix, client, job, kafka = (pipeline[k] for k in ("prefix", "client", "job", "kafka"))
    user = 502
    views = [
        {
            "event_id": f"v{i}",
            "event_ts": ts(20 - i),
            "user_id": user,
            "listing_id": 10 + i,
            "city": "Rome",
            "price": 99.5 + i,
            "room_type": "private_room",
        }
        for i in range(5)
    ]
    topic = f"{prefix}events.listing_view"
    produce_events(kafka, [(topic, orjson.dumps(v)) for v in views])
    wait_for(lambda: len(client.recent(user, "view")) == 5, job, JOB_START_TIMEOUT, "5 views")
    before = [(e.event_id, e.fields) for e in client.recent(user, "view")]
    produce_events(kafka, [(topic, orjson.dumps(v)) for v in views])  # replay everything
    wait_for(
        lambda: len(client.store.versions("view", str(user))) == 10, job, 60, "replay versions"
    )
    assert [(e.event_id, e.fields) for e in client.recent(user, "view")] == before


def test_kill_and_restart_loses_nothing(pipeline: dict) -> None:
    prefix, client, job, kafka = (pipeline[k] for k in ("prefix", "client", "job", "kafka"))
    topic = f"{prefix}events.wishlist_add"
    users = range(600, 620)
    wishes = [
        {"event_id": f"w{u}-{i}", "event_ts": ts(10 - i / 100), "user_id": u, "listing_id": i + 1}
        for i in range(50)
        for u in users
    ]

    def stored() -> int:
        return sum(len(client.recent(u, "wishlist", limit=1000)) for u in users)

    produce_events(kafka, [(topic, orjson.dumps(w)) for w in wishes[:400]])
    wait_for(lambda: stored() > 0, job, JOB_START_TIMEOUT, "the first wishes")
    time.sleep(2.5)  # let at least one checkpoint complete mid-stream
    produce_events(kafka, [(topic, orjson.dumps(w)) for w in wishes[400:700]])
    job.kill()  # SIGKILL: no clean shutdown, no final flush
    produce_events(kafka, [(topic, orjson.dumps(w)) for w in wishes[700:]])
    job.start()  # resumes from its last retained checkpoint
    wait_for(lambda: stored() == len(wishes), job, JOB_START_TIMEOUT, "every wish after restart")
    for user in users:
        ids = [e.event_id for e in client.recent(user, "wishlist", limit=1000)]
        assert len(ids) == len(set(ids)) == 50
