"""Join signal jobs end to end: raw wishlist adds ⋈ listing updates → Flink → Redis → Feast.

The example ``wishlist_enriched`` join runs on the real broker, Flink (RocksDB state backend)
and Redis, with ``missing_right.wait`` shortened to 3 seconds so a test can watch it pass.
Event times sit a second or two before the clock: the join answers once the watermark passes
them, and the watermark trails the newest event by the 2-second out-of-orderness bound.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.e2e.harness import JOB_START_TIMEOUT, Job, wait_for, workspace
from usp_feast import SignalClient
from usp_feast.job_metrics import latest_checkpoint
from usp_feast.kafka_io import consume_all, produce_events

pytestmark = pytest.mark.e2e

JOIN = "wishlist_enriched"


def at(seconds: float, now: datetime) -> str:
    """``seconds`` from ``now`` as producers write ``event_ts`` (negative: before)."""
    moment = now + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def wishlist(user: int, event_id: str, when: str, listing: int) -> tuple[str, bytes]:
    event = {"event_id": event_id, "event_ts": when, "user_id": user, "listing_id": listing}
    return "events.wishlist_add", orjson.dumps(event)


def update(
    event_id: str, when: str, listing: int, price: float, **extra: object
) -> tuple[str, bytes]:
    event = {
        "event_id": event_id,
        "event_ts": when,
        "listing_id": listing,
        "price": price,
        "rating": 4.5,
        "available": True,
        **extra,
    }
    return "events.listing_update", orjson.dumps(event)


class Pipeline:
    """A prefixed copy of the example repository with the join job running on it."""

    def __init__(self, root: Path, kafka: str, redis: str) -> None:
        def quicker(repo: Path) -> None:
            definition = repo / "joins" / f"{JOIN}.yaml"
            definition.write_text(definition.read_text().replace("wait: 1m", "wait: 3s"))

        space = workspace(root, kafka, redis, "join", edit=quicker)
        self.kafka, self.prefix, self.repo = kafka, space.prefix, space.repo
        streaming = space.streaming
        self.checkpoints = root / "checkpoints"
        self.job = Job(
            self.repo, [streaming / f"join_{JOIN}.json"], self.checkpoints, root / "job.log"
        )
        self.client = SignalClient.from_repo(self.repo)

    def produce(self, *records: tuple[str, bytes]) -> None:
        produce_events(self.kafka, [(self.prefix + topic, raw) for topic, raw in records])

    def joined(self, user: int) -> dict[str, dict]:
        """The user's joined rows by event id, as the query API returns them."""
        return {e.event_id: e.fields for e in self.client.recent(user, JOIN)}

    def messages(self, topic: str) -> list[dict]:
        found = consume_all(self.kafka, self.prefix + topic, idle_seconds=2)
        return [orjson.loads(m) for m in found]

    def close(self) -> None:
        self.job.stop()
        self.client.store.drop_project()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[Pipeline]:
    running = Pipeline(tmp_path_factory.mktemp("e2e_joins"), stack.kafka, stack.redis)
    running.job.start()
    yield running
    running.close()


def test_each_wishlist_add_gets_the_listing_version_valid_at_its_time(pipeline: Pipeline) -> None:
    # listing 7001:  v1 ──── A ──── v2 ──── B ──── v3
    #               -2.0s  -1.6s   -1.2s  -0.8s  -0.4s
    # Produced out of order (within the 2-second bound): A joins v1, B joins v2, and v3,
    # newer than both, joins neither.
    now = datetime.now(UTC)
    pipeline.produce(
        wishlist(951, "w-B", at(-0.8, now), 7001),
        update("u-v3", at(-0.4, now), 7001, 130.0),
        wishlist(951, "w-A", at(-1.6, now), 7001),
        update("u-v2", at(-1.2, now), 7001, 120.0),
        update("u-v1", at(-2.0, now), 7001, 100.0),
    )
    wait_for(
        lambda: len(pipeline.joined(951)) == 2,
        pipeline.job,
        JOB_START_TIMEOUT,
        "both wishlist adds to be joined",
    )
    rows = pipeline.joined(951)
    assert (rows["w-A"]["price"], rows["w-A"]["right_event_ts"]) == (100.0, at_utc(-2.0, now))
    assert (rows["w-B"]["price"], rows["w-B"]["right_event_ts"]) == (120.0, at_utc(-1.2, now))
    assert rows["w-B"]["listing_id"] == 7001 and rows["w-B"]["available"] is True
    # Served through Feast like any signal: the newest joined row.
    from feast import FeatureStore

    online = FeatureStore(repo_path=str(pipeline.repo)).get_online_features(
        [f"{JOIN}:price", f"{JOIN}:rating"], entity_rows=[{"user_id": 951}]
    )
    assert online.to_dict()["price"] == [120.0]
    published = [m for m in pipeline.messages(f"usp.signal.{JOIN}") if m["user_id"] == 951]
    assert sorted((m["event_id"], m["price"]) for m in published) == [
        ("w-A", 100.0),
        ("w-B", 120.0),
    ]


def at_utc(seconds: float, now: datetime) -> str:
    """The joined row's ``right_event_ts`` for an event sent at :func:`at` ``(seconds, now)``."""
    moment = datetime.fromisoformat(at(seconds, now).replace("Z", "+00:00"))
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_a_missing_listing_update_is_waited_for_then_emitted_as_nulls(pipeline: Pipeline) -> None:
    # listing 7002: C, then its first update 1 s later (within the 3 s wait): joined with it.
    # listing 7003: D, never updated: emitted with null right fields once the wait has passed.
    now = datetime.now(UTC)
    pipeline.produce(
        wishlist(952, "w-C", at(-1.5, now), 7002),
        wishlist(952, "w-D", at(-1.4, now), 7003),
        update("u-7002", at(-0.5, now), 7002, 80.0),
    )
    wait_for(lambda: len(pipeline.joined(952)) == 2, pipeline.job, 60, "both adds to be answered")
    rows = pipeline.joined(952)
    assert rows["w-C"]["price"] == 80.0
    assert rows["w-D"]["price"] is None and rows["w-D"]["right_event_ts"] is None
    assert rows["w-D"]["listing_id"] == 7003


def test_bad_and_late_events_are_set_aside_with_reasons(pipeline: Pipeline) -> None:
    now = datetime.now(UTC)
    pipeline.produce(
        # Breaks the contract, with a time an hour ahead: it must not move event time on
        # (if it did, the valid add below would be late).
        update("u-bad", at(3600, now), 7004, 90.0, rating=9.5),
        (
            "events.wishlist_add",
            b'{"event_id": "w-garbled", "user_id": 953',  # not JSON
        ),
        wishlist(953, "w-late", at(-600, now), 7001),  # ten minutes behind the watermark
        wishlist(953, "w-ok", at(-0.4, now), 7001),
    )
    wait_for(lambda: "w-ok" in pipeline.joined(953), pipeline.job, 60, "the valid add")
    assert set(pipeline.joined(953)) == {"w-ok"}
    dead = {
        base64.b64decode(d["original_base64"]): d["reasons"]
        for d in pipeline.messages(f"usp.dlq.{JOIN}")
    }
    [bad] = [reasons for original, reasons in dead.items() if b"u-bad" in original]
    assert [r["column"] for r in bad] == ["rating"]
    assert any(b"w-garbled" in original for original in dead)
    late = [m for m in pipeline.messages(f"usp.late.join.{JOIN}") if "w-late" in m["event"]]
    assert len(late) == 1 and "behind the watermark" in late[0]["reason"]


@pytest.fixture
def restartable(tmp_path: Path, stack) -> Iterator[Pipeline]:
    running = Pipeline(tmp_path, stack.kafka, stack.redis)
    yield running
    running.close()


def test_join_state_survives_a_crash(restartable: Pipeline) -> None:
    pipeline, job = restartable, restartable.job
    job.start()
    now = datetime.now(UTC)
    pipeline.produce(
        update("u-before", at(-1.0, now), 7100, 55.0),
        wishlist(961, "w-before", at(-0.5, now), 7100),
    )
    wait_for(lambda: "w-before" in pipeline.joined(961), job, JOB_START_TIMEOUT, "the first join")
    # A checkpoint completed after the join holds the listing update in the join's state and
    # source offsets past both events: after the crash neither is read again.
    seen = time.time()
    wait_for(
        lambda: (
            (found := latest_checkpoint(pipeline.checkpoints)) is not None
            and found.stat().st_mtime > seen + 1
        ),
        job,
        60,
        "a checkpoint after the first join",
    )
    job.kill()
    job.start()
    after = datetime.now(UTC)
    pipeline.produce(wishlist(961, "w-after", at(-0.5, after), 7100))
    wait_for(
        lambda: "w-after" in pipeline.joined(961), job, JOB_START_TIMEOUT, "the join after restart"
    )
    rows = pipeline.joined(961)
    # Only the restored state knows the update: it was read before the crash.
    assert rows["w-after"]["price"] == 55.0
    assert rows["w-after"]["right_event_ts"] == at_utc(-1.0, now)
    published = [m["event_id"] for m in pipeline.messages(f"usp.signal.{JOIN}")]
    assert published.count("w-before") == 1  # restored, not replayed from the start
    assert "restoring from checkpoint" in job.log.read_text(errors="replace")


def test_a_backlog_on_both_topics_joins_as_if_it_had_arrived_in_order(
    restartable: Pipeline,
) -> None:
    # Ten thousand updates and ten thousand adds, interleaved in event time ten minutes ago,
    # are on the topics before the job starts: the consumer hands them over topic by topic,
    # not in event-time order. The watermark follows the slower topic, so no add is answered
    # before the updates up to its time are in, and nothing is late.
    pipeline, job = restartable, restartable.job
    start = datetime.now(UTC) - timedelta(minutes=10)
    records, expected = [], {}
    prices: dict[int, float] = {}
    for i in range(20_000):
        when = at(i * 0.005, start)
        listing = 7200 + (i // 2) % 40
        if i % 2 == 0:
            prices[listing] = float(i)
            records.append(update(f"bu-{i}", when, listing, float(i)))
        else:
            records.append(wishlist(971 + i % 7, f"bw-{i}", when, listing))
            expected[f"bw-{i}"] = prices.get(listing)
    pipeline.produce(*records)
    job.start()
    topic = f"usp.signal.{JOIN}"
    wait_for(
        lambda: len(pipeline.messages(topic)) >= len(expected),
        job,
        JOB_START_TIMEOUT,
        "every add of the backlog to be joined",
    )
    joined = {m["event_id"]: m["price"] for m in pipeline.messages(topic)}
    assert joined == expected
    assert pipeline.messages(f"usp.late.join.{JOIN}") == []
