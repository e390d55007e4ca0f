"""Small Kafka helpers over confluent-kafka (standard clients only, any Kafka cluster works).

Every client is configured by :func:`usp_feast.connections.kafka_config`, so the SASL and TLS
settings of the environment (``USP_KAFKA_SECURITY_PROTOCOL`` and the rest) apply to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from usp_feast.connections import kafka_config
from usp_feast.traffic import RawEvent

__all__ = ["consume_all", "end_offsets", "produce_events", "producer", "send"]


def producer(bootstrap: str, **config: Any) -> Producer:
    """A producer tuned for low latency (events are sent as they come)."""
    return Producer(kafka_config(bootstrap, {"linger.ms": 1, **config}))


def send(sender: Producer, topic: str, value: bytes) -> None:
    """Queue one record; when the client's queue is full, wait for deliveries instead of failing."""
    while True:
        try:
            sender.produce(topic, value)
            return
        except BufferError:
            sender.poll(0.1)


def produce_events(bootstrap: str, events: Iterable[RawEvent | tuple[str, bytes]]) -> int:
    """Send events (``RawEvent`` as JSON, or ``(topic, raw bytes)`` as given); flush; count."""
    sender = producer(bootstrap)
    count = 0
    for event in events:
        if isinstance(event, RawEvent):
            send(sender, event.topic, orjson.dumps(event.payload))
        else:
            send(sender, event[0], event[1])
        count += 1
        if count % 10_000 == 0:
            sender.poll(0)
    remaining = sender.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} events were not acknowledged by Kafka at {bootstrap}")
    return count


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition → current end offset of ``topic`` (where a reader starting now begins)."""
    consumer = Consumer(kafka_config(bootstrap, {"group.id": f"usp-offsets-{time.time_ns()}"}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def consume_all(
    bootstrap: str,
    topic: str,
    *,
    idle_seconds: float = 2.0,
    timeout: float = 60.0,
    start: dict[int, int] | None = None,
) -> Iterator[bytes]:
    """Records of ``topic`` until none came for ``idle_seconds``.

    From the beginning, or from ``start`` (partition → offset, e.g. :func:`end_offsets` taken
    earlier) so a reader skips a long history it does not need.
    """
    consumer = Consumer(
        kafka_config(
            bootstrap,
            {
                "group.id": f"usp-reader-{time.time_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                # Brokers finish a new group's join after a share of the session timeout (and
                # Kafka delays the first rebalance): keep it short so reading starts promptly.
                "session.timeout.ms": 6000,
            },
        )
    )
    assigned_at: list[float] = []
    if start is None:
        consumer.subscribe([topic], on_assign=lambda _c, _p: assigned_at.append(time.monotonic()))
    else:
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in start.items()])
        assigned_at.append(time.monotonic())
    deadline = time.monotonic() + timeout
    last: float | None = None
    try:
        while time.monotonic() < deadline:
            # The idle clock starts once partitions are assigned, not before the join.
            if last is None and assigned_at:
                last = assigned_at[0]
            if last is not None and time.monotonic() - last >= idle_seconds:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"reading {topic}: {error}")
            last = time.monotonic()
            value = message.value()
            if value is not None:
                yield value
    finally:
        consumer.close()
