"""The Flink wiring shared by the per-user jobs over signal topics (segments, sessions).

Per definition, one pipeline::

    Kafka usp.signal.<input signals> (record time = event time)
      → event-time watermarks following the slowest input topic, moving on while input is
        idle (Java)
      → UserKeys (Java: the user id) → key by user
      → the definition's KeyedProcessFunction (Python: pure-core state in keyed state, one
        event-time timer per user) → JSON messages
      ├→ StringBatcher (Java) → the definition's writer (Python: store, offline parts)
      │    → Unbatcher (Java) → Kafka <output topic>
      └→ side output LATE: input set aside or applied late, with the reason → Kafka <late topic>

Crash safety: keyed state and timers are checkpointed with the source offsets; the
StringBatcher hands its batch on before each barrier and the writer writes it synchronously,
so a completed checkpoint never covers an unwritten message.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    KeyedStream,
    MapFunction,
    OutputTag,
    RuntimeContext,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from usp_feast.flink import JobRuntime, java_operator, kafka_rows, kafka_sink, unbatch
from usp_feast.job_metrics import JobIdentity
from usp_feast.jobs import JobSettings, KeyedJobConfig

__all__ = [
    "CHANGE_BATCH",
    "LATE",
    "MESSAGES",
    "READ_AT",
    "SIGNAL_ROW",
    "BatchWriter",
    "LateCounter",
    "add_keyed_pipeline",
    "as_messages",
    "aside",
    "by_user",
    "keep_one_timer",
    "keyed_by",
    "measured",
    "stamped",
    "store_and_publish",
    "timer_for",
]

logger = logging.getLogger(__name__)

# StringBatcher output: (messages as JSON, whether a checkpoint barrier follows).
CHANGE_BATCH = Types.ROW([Types.OBJECT_ARRAY(Types.STRING()), Types.BOOLEAN()])
# What the keyed function receives per signal event: (row JSON, topic).
SIGNAL_ROW = Types.ROW([Types.STRING(), Types.STRING()])
# A writer's output: (topic messages, event ms per message), for the Unbatcher.
MESSAGES = Types.ROW([Types.LIST(Types.STRING()), Types.LIST(Types.LONG())])
LATE = OutputTag("late", Types.STRING())
# A message's field with the time (epoch ms) the keyed step emitted it: the writer measures
# the job latency from it and drops it before anything is stored or published.
READ_AT = "_read_ms"


def stamped(message: dict[str, Any]) -> str:
    """``message`` as JSON, stamped with the time it leaves the keyed step (:data:`READ_AT`)."""
    import orjson

    return orjson.dumps({**message, READ_AT: time.time() * 1000.0}).decode()


def measured(
    step: Callable[[Any, Any, Any], Iterator[Any]],
) -> Callable[[Any, Any, Any], Iterator[Any]]:
    """Wrap a keyed ``process_element``: count the input, its event and step latency.

    The function's ``self.metrics`` is its pipeline's metrics; what it sets aside on
    :data:`LATE` counts as a dead letter.
    """

    @functools.wraps(step)
    def process_element(self: Any, value: Any, ctx: Any) -> Iterator[Any]:
        started = time.time()
        self.metrics.read_one(started, ctx.timestamp())
        for out in step(self, value, ctx):
            if isinstance(out, tuple) and out[0] is LATE:
                self.metrics.dead_letters += 1
            yield out
        self.metrics.transformed(1, time.time() - started)

    return process_element


def add_keyed_pipeline(
    t_env: StreamTableEnvironment,
    config: KeyedJobConfig,
    runtime: JobRuntime,
    *,
    process: KeyedProcessFunction,
    write: BatchWriter,
    stage: str,
    label: str,
    output_topic: str,
) -> None:
    """Add one definition's pipeline (see the module docstring) to the job.

    Args:
        t_env: The job's table environment (the Kafka source is a table).
        config: The definition's job config.
        runtime: Where the job runs.
        process: Keyed by user; yields JSON messages, and ``(LATE, text)`` for input set aside.
        write: Takes a ``CHANGE_BATCH``, writes it, returns ``MESSAGES`` for the output topic.
        stage: Names the keyed operator and its uid (``<name>-<stage>``; keep it stable, the
            checkpointed state is found by it).
        label: The definition's name, for operator names.
        output_topic: Where the writer's messages go.

    """
    name = config.name
    # Signal topics carry each row's event time as the Kafka record time (the signal job's
    # Unbatcher sets it), so timestamps and watermarks need no Python call.
    # Per input topic: one signal topic read ahead of another (a backlog) must not make the
    # other's rows late.
    gateway = get_gateway()
    topics = gateway.new_array(gateway.jvm.String, len(config.inputs))
    for i, source in enumerate(config.inputs):
        topics[i] = source.topic
    strategy = gateway.jvm.io.uspfeast.flink.IdleAdvancingWatermarks.strategy(
        config.watermark_out_of_orderness_ms, config.idle_advance_ms, 2, 1, topics
    )
    rows = kafka_rows(
        t_env,
        f"signals_{name}",
        columns="""
          `value` STRING,
          `topic` STRING METADATA VIRTUAL,
          `event_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL""",
        topics=[i.topic for i in config.inputs],
        group=config.consumer_group,
        bootstrap=runtime.bootstrap_servers,
    )
    signals = rows.assign_timestamps_and_watermarks(WatermarkStrategy(strategy)).uid(
        f"{name}-watermarks"
    )
    changes = (
        by_user(signals, f"user keys {name}")
        .process(process, output_type=Types.STRING())
        .name(f"{stage} {label}")
        .uid(f"{name}-{stage}")
    )
    store_and_publish(
        changes,
        config,
        runtime,
        name=name,
        write=write,
        store_label=f"store {stage} {label}",
        output_topic=output_topic,
        late_topic=config.late_topic,
    )


def store_and_publish(
    changes: DataStream,
    config: JobSettings,
    runtime: JobRuntime,
    *,
    name: str,
    write: BatchWriter,
    store_label: str,
    output_topic: str,
    late_topic: str,
) -> None:
    """The tail of a keyed pipeline: batch its messages, write them, publish what is written.

    ``changes`` are a keyed function's JSON messages (with input set aside on ``LATE``):
    StringBatcher (Java) → ``write`` (Python) → Unbatcher (Java) → ``output_topic``, and the
    side output → ``late_topic``. Uids are ``<name>-batch``, ``-store``, ``-changes``,
    ``-topic-sink`` and ``-late-sink``.
    """
    batcher = get_gateway().jvm.io.uspfeast.flink.StringBatcher(
        config.batch_max_rows, config.batch_max_delay_ms
    )
    written = (
        java_operator(changes, f"batch {name}", CHANGE_BATCH, batcher)
        .uid(f"{name}-batch")
        .map(write, output_type=MESSAGES)
        .name(store_label)
        .uid(f"{name}-store")
    )
    unbatch(written, 0, 1, f"changes {name}").uid(f"{name}-changes").sink_to(
        kafka_sink(runtime.bootstrap_servers, output_topic)
    ).name(f"output topic {output_topic}").uid(f"{name}-topic-sink")
    changes.get_side_output(LATE).sink_to(kafka_sink(runtime.bootstrap_servers, late_topic)).name(
        f"late input {late_topic}"
    ).uid(f"{name}-late-sink")


def by_user(signals: DataStream, name: str) -> KeyedStream:
    """``signals.key_by(user id)``, with the key read in Java (``UserKeys``)."""
    return keyed_by(signals, name, get_gateway().jvm.io.uspfeast.flink.UserKeys(), SIGNAL_ROW)


def keyed_by(stream: DataStream, name: str, keys: Any, value_type: Any) -> KeyedStream:
    """``stream`` keyed by what the Java operator ``keys`` reads: it emits ``(key, value)`` rows.

    PyFlink's ``key_by`` runs the key selector in a Python operator of its own (one more
    JVM-to-Python crossing per record); this builds the same keyed stream, ``(key, value)``
    pairs partitioned by PyFlink's ``KeyByKeySelector``, from a Java operator instead.
    """
    gateway = get_gateway()
    pairs = java_operator(stream, name, Types.ROW([Types.STRING(), value_type]), keys)
    j_keyed = pairs._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, value_type, stream)


def aside(definition: dict[str, Any], topic: str, text: str, reason: str) -> str:
    """The late-topic message for one input: which definition, from where, why, the input."""
    import orjson

    return orjson.dumps({**definition, "topic": topic, "reason": reason, "event": text}).decode()


class LateCounter:
    """Counts input that arrived late.

    As the Flink metric ``usp_late_events`` of the operator, and a log line at the first and
    every 1000th.
    """

    def __init__(self, runtime_context: RuntimeContext, what: str) -> None:
        self.metric = runtime_context.get_metrics_group().counter("usp_late_events")
        self.what = what
        self.count = 0

    def add(self) -> None:
        """One more late input."""
        self.metric.inc()
        self.count += 1
        if self.count == 1 or self.count % 1000 == 0:
            logger.warning("%d input events %s", self.count, self.what)


def timer_for(deadline: int | None) -> int | None:
    """The event-time timer for a core's ``deadline`` (the watermark it waits for, plus one).

    A Flink watermark ``W`` promises no event at or before ``W``; the cores take the time up
    to which input is complete, ``W + 1``. A timer at ``deadline - 1`` fires when the watermark
    reaches it, so at exactly ``deadline`` in the core's terms.
    """
    return None if deadline is None else deadline - 1


def as_messages(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
    """Rows as output-topic messages (JSON) and their event times (epoch ms, from event_ts)."""
    import orjson

    from usp_feast.segments import row_event_ms

    return [orjson.dumps(r).decode() for r in rows], [row_event_ms(r) for r in rows]


def keep_one_timer(ctx: Any, timer: int | None, due: int | None) -> int | None:
    """Keep at most one event-time timer per user, never later than ``due``; returns it.

    A later ``due`` (the common case: activity pushes the deadline on) leaves the timer alone:
    it fires at the old time, finds nothing due and is set again. That keeps timer calls off
    the per-event path.
    """
    if due is not None and (timer is None or due < timer):
        ctx.timer_service().register_event_time_timer(due)
        return due
    return timer


class BatchWriter(MapFunction):
    """The writer step: a batch of JSON messages in, written, topic messages out.

    Subclasses say which sink writes (:meth:`make_sink`: ``write(rows)`` and ``checkpoint()``)
    and what goes on the output topic (:meth:`published`). Before a checkpoint barrier the
    sink is checkpointed too (offline part files), so a completed checkpoint covers only
    written rows.
    """

    def __init__(self, repo: Path, config: Any, job: JobIdentity) -> None:
        self.repo = repo
        self.config = config
        self.job = job
        self.definition: str = config.definition
        self.sink: Any = None
        self.metrics: Any = None

    def make_sink(self) -> Any:
        """The sink, built in the task (it holds connections)."""
        raise NotImplementedError

    def published(self, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
        """The output topic's messages for ``rows`` and each one's event time (epoch ms)."""
        raise NotImplementedError

    def open(self, runtime_context: RuntimeContext) -> None:
        """Connect the sink to the store through the repository's Feast config."""
        from usp_feast.flink import config_metrics

        self.sink = self.make_sink()
        self.metrics = config_metrics(self.config, self.job)

    def close(self) -> None:
        """Write the offline rows still buffered."""
        from usp_feast.flink import release_metrics

        if self.sink is not None:
            self.sink.checkpoint()
        if self.metrics is not None:
            release_metrics(self.config, self.job)

    def map(self, value: Any) -> Row:
        """Write synchronously (a barrier may follow), then hand the messages on."""
        import orjson

        values, barrier_follows = value
        rows = [orjson.loads(v) for v in values]
        read_ms = [row.pop(READ_AT, None) for row in rows]
        self.sink.write(rows)
        self.metrics.rows_stored_at([ms for ms in read_ms if ms is not None])
        if barrier_follows:
            self.sink.checkpoint()
        return Row(*self.published(rows))
