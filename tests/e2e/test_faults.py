"""Faults a running signal job survives with nothing lost: its Redis frozen, a poison flood,
its broker restarted.

The job writes to a Redis of its own (started here), so freezing it disturbs no other test;
the broker restart uses a broker of its own too.
Each test asserts that every valid event is readable exactly once afterwards, that every
invalid one is in the dead-letter topic with its reason, and that Flink never restarted the job
(the sink waits and retries; it does not fail).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from tests.conftest import free_port
from tests.e2e.failover import SteadyStream, restarts
from tests.e2e.harness import JOB_START_TIMEOUT, Job, ts, wait_for, workspace
from usp_feast import SignalClient, devstack
from usp_feast.kafka_io import consume_all, produce_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A redis-server only this module writes to; yields its URL and pid."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; run scripts/setup.sh"
    folder, port = tmp_path_factory.mktemp("own-redis"), free_port()
    with (folder / "redis.log").open("wb") as log:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, (folder / "redis.log").read_text()
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}", server.pid
    server.terminate()
    server.wait(timeout=20)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, stack, own_redis) -> Iterator[dict]:
    url, _ = own_redis
    root = tmp_path_factory.mktemp("faults")
    space = workspace(root, stack.kafka, url, "faults")
    flink_port = free_port()
    job = Job(
        space.repo,
        [space.streaming / "wishlist.json"],
        root / "checkpoints",
        root / "job.log",
        env={"USP_FLINK_METRICS_PORT": str(flink_port)},
    )
    job.start()
    client = SignalClient.from_repo(space.repo)
    yield {
        "job": job,
        "client": client,
        "kafka": stack.kafka,
        "topic": f"{space.prefix}events.wishlist_add",
        "dlq": f"{space.prefix}usp.dlq.wishlist",
        "flink_metrics": f"http://127.0.0.1:{flink_port}/metrics",
    }
    job.stop()


def test_redis_frozen_for_10_s_holds_the_job_back_and_loses_nothing(
    running: dict, own_redis: tuple[str, int]
) -> None:
    job, client = running["job"], running["client"]
    _, redis_pid = own_redis
    stream = SteadyStream(running["kafka"], running["topic"], 1, range(800, 820), rate=100)
    with stream:
        wait_for(lambda: bool(stream.visible(client)), job, JOB_START_TIMEOUT, "first events")
        before = restarts(running["flink_metrics"])
        os.kill(redis_pid, signal.SIGSTOP)  # no answers, connections left hanging
        try:
            time.sleep(10)
            job.check_alive()
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        time.sleep(2)  # events keep coming after Redis is back
    assert stream.failed == 0
    sent = set(stream.sent)
    wait_for(lambda: set(stream.visible(client)) >= sent, job, 120, "every event after the thaw")
    seen = stream.visible(client)
    assert len(seen) == len(set(seen)) == len(sent)
    assert restarts(running["flink_metrics"]) == before, "the job failed instead of waiting"


def _wish(user: int, event_id: str, **changes: object) -> dict:
    return {"event_id": event_id, "event_ts": ts(1), "user_id": user, "listing_id": 7, **changes}


def _poison(index: int, user: int) -> tuple[bytes, str]:
    """One bad record of six kinds in turn, and the reason the dead letter must give."""
    kind = index % 6
    if kind == 0:
        return b'{"event_id": "cut off', "json"
    if kind == 1:  # over max_event_bytes (64 KiB)
        return orjson.dumps(_wish(user, f"big{index}", note="x" * 70_000)), "bytes"
    if kind == 2:
        return orjson.dumps(_wish(user, f"f{index}", event_ts="2999-01-01T00:00:00Z")), "ahead"
    if kind == 3:
        return orjson.dumps(_wish(user, f"a{index}", event_ts="1970-01-01T00:00:00Z")), "older"
    if kind == 4:
        return orjson.dumps(_wish(user, f"t{index}", listing_id="seven")), "listing_id"
    return orjson.dumps({"event_id": f"u{index}", "event_ts": ts(1), "listing_id": 7}), "user_id"


def test_a_poison_flood_at_full_rate_dead_letters_every_bad_record_and_stores_the_rest(
    running: dict,
) -> None:
    job, client, kafka = running["job"], running["client"], running["kafka"]
    users = range(900, 950)
    records: list[bytes] = []
    expected_reasons: list[str] = []
    valid: set[str] = set()
    for i in range(6000):
        user = users[i % len(users)]
        if i % 10 == 9:  # 10 % poison, spread through the stream
            record, reason = _poison(i // 10, user)
            expected_reasons.append(reason)
        else:
            record = orjson.dumps(_wish(user, f"ok{i}"))
            valid.add(f"ok{i}")
        records.append(record)
    before = restarts(running["flink_metrics"])

    produce_events(kafka, [(running["topic"], record) for record in records])

    def stored() -> set[str]:
        return {e.event_id for u in users for e in client.recent(u, "wishlist", limit=1000)}

    wait_for(lambda: stored() >= valid, job, 180, "every valid event of the flood")
    assert stored() == valid
    letters = [orjson.loads(raw) for raw in consume_all(kafka, running["dlq"], timeout=120)]
    assert len(letters) == len(expected_reasons) == 600

    def reason_of(letter: dict) -> str:
        text = orjson.dumps(letter["reasons"]).decode()
        (match,) = [kind for kind in set(expected_reasons) if kind in text]
        return match

    assert Counter(reason_of(letter) for letter in letters) == Counter(expected_reasons)
    originals = {base64.b64decode(letter["original_base64"]) for letter in letters}
    assert b'{"event_id": "cut off' in originals  # the bytes as sent, to replay once fixed
    assert restarts(running["flink_metrics"]) == before


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A noida-db broker only this module uses, restartable; noida-db keeps its log on disk,
    so a restart loses nothing the broker acknowledged (whatever broker the suite runs on)."""
    folder, port = tmp_path_factory.mktemp("own-broker"), free_port()
    command = devstack.BROKERS["noida-db"](port, folder / "data")
    broker: dict = {"bootstrap": f"127.0.0.1:{port}", "log": folder / "broker.log"}

    def start() -> None:
        with broker["log"].open("ab") as log:
            broker["process"] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while not _answers(broker["bootstrap"]):
            assert time.monotonic() < deadline, broker["log"].read_text()[-2000:]
            time.sleep(0.2)

    def stop() -> None:
        os.killpg(broker["process"].pid, signal.SIGKILL)  # no clean shutdown
        broker["process"].wait(timeout=20)

    broker.update(start=start, stop=stop)
    start()
    yield broker
    stop()


def _answers(bootstrap: str) -> bool:
    host, port = bootstrap.split(":")
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


def test_a_broker_restart_mid_stream_loses_nothing(tmp_path: Path, stack, own_broker: dict) -> None:
    kafka = own_broker["bootstrap"]
    space = workspace(tmp_path, kafka, stack.redis, "broker")
    job = Job(
        space.repo,
        [space.streaming / "wishlist.json"],
        tmp_path / "checkpoints",
        tmp_path / "job.log",
        env={"USP_KAFKA_BOOTSTRAP": kafka},
    )
    job.start()
    client = SignalClient.from_repo(space.repo)
    users = range(960, 980)
    try:
        first = [orjson.dumps(_wish(users[i % 20], f"b{i}")) for i in range(1000)]
        produce_events(kafka, [(f"{space.prefix}events.wishlist_add", r) for r in first])

        def stored() -> set[str]:
            return {e.event_id for u in users for e in client.recent(u, "wishlist", limit=1000)}

        wait_for(lambda: len(stored()) == 1000, job, JOB_START_TIMEOUT, "the first 1,000")
        own_broker["stop"]()
        time.sleep(5)  # the job's consumers and producers see the broker gone
        own_broker["start"]()
        then = [orjson.dumps(_wish(users[i % 20], f"b{i}")) for i in range(1000, 2000)]
        produce_events(kafka, [(f"{space.prefix}events.wishlist_add", r) for r in then])
        wait_for(lambda: len(stored()) == 2000, job, 180, "every event after the restart")
        seen = [e.event_id for u in users for e in client.recent(u, "wishlist", limit=1000)]
        assert len(seen) == len(set(seen)) == 2000
    finally:
        job.stop()
        client.store.drop_project()
