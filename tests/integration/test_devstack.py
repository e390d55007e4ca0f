"""The local dev stack really starts, answers, stays single and stops.

Each test runs its own stack on free ports with its own state directory, so it neither reuses nor
disturbs the stack `scripts/test.sh` started (or a system Redis on 6379).
"""

from __future__ import annotations

import doctest
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from usp_feast import devstack
from usp_feast.devstack import DevStackError

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _live_processes() -> Iterator[tuple[int, int, str]]:
    """(pid, process group, command line) of every live, non-zombie process."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            yield int(proc.name), int(fields[2]), cmdline


def _stack_processes(state: Path, groups: set[int]) -> set[int]:
    """Live pids that belong to the stack: in one of its process groups or naming its state dir.

    The state dir on the command line catches a broker child that left its group.
    """
    return {
        pid for pid, pgid, cmdline in _live_processes() if pgid in groups or str(state) in cmdline
    }


@pytest.fixture
def isolated_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private state dir and free ports; whatever the test started is stopped afterwards."""
    state = tmp_path / "usp-state"
    monkeypatch.setenv("USP_STATE_DIR", str(state))
    monkeypatch.setenv("USP_REDIS_PORT", str(_free_port()))
    monkeypatch.setenv("USP_KAFKA_PORT", str(_free_port()))
    monkeypatch.delenv("USP_REDIS_URL", raising=False)
    monkeypatch.delenv("USP_KAFKA_BOOTSTRAP", raising=False)
    try:
        yield state
    finally:
        devstack.down()


def _kafka_round_trip(bootstrap: str, **consumer_config: Any) -> tuple[bytes | None, bytes | None]:
    topic = f"usp.test.devstack.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)]
    ).values():
        future.result(timeout=15)

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=b"user-1", value=b'{"event": "search"}')
    assert producer.flush(15) == 0, "the message was not delivered"

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"devstack-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            **consumer_config,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message.key(), message.value()
    finally:
        consumer.close()
    pytest.fail(f"no message came back from {topic} within 30s")


def test_up_is_idempotent_serves_redis_and_kafka_and_down_stops_everything(
    isolated_stack: Path,
) -> None:
    ends = devstack.up()
    assert ends == devstack.endpoints()
    assert ends.redis == f"redis://127.0.0.1:{os.environ['USP_REDIS_PORT']}"
    assert ends.kafka == f"127.0.0.1:{os.environ['USP_KAFKA_PORT']}"

    first = devstack.status()
    assert devstack.up() == ends
    second = devstack.status()
    # A second `up` must reuse the running services, not start new ones.
    assert {name: svc["pid"] for name, svc in second["services"].items()} == {
        name: svc["pid"] for name, svc in first["services"].items()
    }
    assert second["kafka"] == ends.kafka
    assert second["redis"] == ends.redis
    assert second["state_dir"] == str(isolated_stack)
    for name in ("redis", "kafka"):
        service = second["services"][name]
        assert service["running"] is True, name
        assert isinstance(service["pid"], int), name
        assert Path(service["log"]).is_file(), name
        assert Path(service["log"]).is_relative_to(isolated_stack), name

    client = redis.Redis.from_url(ends.redis)
    assert client.ping() is True
    client.close()
    assert _kafka_round_trip(ends.kafka) == (b"user-1", b'{"event": "search"}')

    groups = {svc["pid"] for svc in second["services"].values()}
    assert groups <= _stack_processes(isolated_stack, groups)

    devstack.down()

    after = devstack.status()
    for name in ("redis", "kafka"):
        stopped = {**second["services"][name], "running": False, "pid": None}
        assert after["services"][name] == stopped, name
    assert _stack_processes(isolated_stack, groups) == set()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(ends.redis, socket_connect_timeout=1).ping()

    devstack.down()  # a second `down` is a no-op, not an error
    assert _stack_processes(isolated_stack, groups) == set()


def test_up_refuses_a_redis_port_held_by_a_foreign_listener(isolated_stack: Path) -> None:
    port = int(os.environ["USP_REDIS_PORT"])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(DevStackError) as raised:
            devstack.up(wait_seconds=10)
        message = str(raised.value)
        assert "Redis" in message
        assert "already in use" in message
        assert f"127.0.0.1:{port}" in message
        assert "USP_REDIS_PORT" in message
        assert str(isolated_stack / "redis" / "redis.log") in message

    # The conflict is found before anything starts, so nothing is left running.
    services = devstack.status()["services"]
    assert services["redis"]["running"] is False
    assert services["kafka"]["running"] is False
    assert _stack_processes(isolated_stack, set()) == set()


def test_down_never_signals_a_process_it_did_not_start(isolated_stack: Path) -> None:
    # A stale record whose pid now belongs to someone else (pid reuse) must be ignored.
    stranger = os.posix_spawnp("sleep", ["sleep", "60"], dict(os.environ), setsid=True)
    try:
        isolated_stack.mkdir(parents=True)
        (isolated_stack / "redis.json").write_text(f'{{"pid": {stranger}, "start_ticks": 1}}')
        assert devstack.status()["services"]["redis"]["running"] is False
        devstack.down()
        os.kill(stranger, 0)  # still alive: raises ProcessLookupError otherwise
        assert os.waitpid(stranger, os.WNOHANG) == (0, 0)
    finally:
        os.kill(stranger, 9)
        os.waitpid(stranger, 0)


def test_docstring_examples_run(isolated_stack: Path) -> None:
    results = doctest.testmod(devstack, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0
    assert results.failed == 0


def test_tansu_serves_kafka_and_down_stops_it(
    isolated_stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USP_KAFKA_BROKER", "tansu")
    ends = devstack.up()
    assert ends.kafka == f"127.0.0.1:{os.environ['USP_KAFKA_PORT']}"
    running = devstack.status()["services"]
    kafka = running["kafka"]
    assert kafka["running"] is True
    assert kafka["broker"] == "tansu"
    assert Path(kafka["log"]).is_relative_to(isolated_stack)
    assert "tansu" in Path(f"/proc/{kafka['pid']}/cmdline").read_text()
    assert devstack.up() == ends  # idempotent with tansu too
    assert devstack.status()["services"]["kafka"]["pid"] == kafka["pid"]

    # Tansu 0.6.0 completes a consumer group join only after about half of session.timeout.ms
    # (about 23 s with librdkafka's 45 s default), so the consumer asks for a short session.
    assert _kafka_round_trip(ends.kafka, **{"session.timeout.ms": 6000}) == (
        b"user-1",
        b'{"event": "search"}',
    )

    # One state directory runs one broker: asking it for another must not reuse tansu silently.
    monkeypatch.setenv("USP_KAFKA_BROKER", "noida-db")
    with pytest.raises(DevStackError, match="already runs tansu"):
        devstack.up(wait_seconds=10)
    assert devstack.status()["services"]["kafka"]["pid"] == kafka["pid"]

    groups = {svc["pid"] for svc in running.values()}
    assert groups <= _stack_processes(isolated_stack, groups)
    devstack.down()
    assert _stack_processes(isolated_stack, groups) == set()
    after = devstack.status()["services"]
    assert after["kafka"]["running"] is False
    assert after["redis"]["running"] is False
    with socket.socket() as sock:  # the port is free again
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(os.environ["USP_KAFKA_PORT"])))


def test_up_rejects_an_unknown_broker_before_starting_anything(
    isolated_stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USP_KAFKA_BROKER", "kafka-on-a-floppy")
    with pytest.raises(DevStackError, match="USP_KAFKA_BROKER='kafka-on-a-floppy'") as raised:
        devstack.up(wait_seconds=10)
    assert "noida-db" in str(raised.value) and "tansu" in str(raised.value)
    assert devstack.status()["services"]["redis"]["running"] is False
    assert _stack_processes(isolated_stack, set()) == set()
