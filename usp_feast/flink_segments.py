"""Thin PyFlink adapter of a segment job: Flink keyed state and timers around the pure core.

Per segment, one pipeline::

    Kafka usp.signal.<trigger and exit signals> (record time = event time)
      → event-time watermarks that keep moving while input is idle (Java)
      → UserKeys (Java: the user id) → key by user
      → SegmentMembership (Python: MembershipState in keyed state, the expiry as an
        event-time timer, SegmentLogic applied to each event and timer)
      ├→ StringBatcher (Java) → WriteMembership (Python: history through Feast, members
      │    index, offline Parquet part files per checkpoint)
      │    → Unbatcher (Java) → Kafka usp.segment.<name>
      └→ input set aside (not a signal row) or applied late (behind the watermark), with the
           reason → Kafka usp.late.segment.<name>

Crash safety: the membership state and its timers are checkpointed with the source offsets;
the StringBatcher hands its batch on before each barrier and WriteMembership writes it
synchronously, so a completed checkpoint never covers an unwritten change. Replayed input
produces the same change ids (see :mod:`usp_feast.segments`), so readers see no duplicates.
"""

from __future__ import annotations

import logging
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
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from usp_feast.flink import JobRuntime, java_operator, kafka_rows, kafka_sink, unbatch
from usp_feast.jobs import SegmentJobConfig

__all__ = ["CHANGE_BATCH", "add_segment"]

logger = logging.getLogger(__name__)

# StringBatcher output: (change rows as JSON, whether a checkpoint barrier follows).
CHANGE_BATCH = Types.ROW([Types.OBJECT_ARRAY(Types.STRING()), Types.BOOLEAN()])
# What the keyed function receives per signal event: (row JSON, topic).
SIGNAL_ROW = Types.ROW([Types.STRING(), Types.STRING()])
# WriteMembership output: (topic messages, event ms per message), for the Unbatcher.
_MESSAGES = Types.ROW([Types.LIST(Types.STRING()), Types.LIST(Types.LONG())])
LATE = OutputTag("late", Types.STRING())


def add_segment(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: SegmentJobConfig,
    runtime: JobRuntime,
) -> None:
    """Add one segment's pipeline to the job."""
    name = config.name
    # Signal topics carry each row's event time as the Kafka record time (the signal job's
    # Unbatcher sets it), so timestamps and watermarks need no Python call.
    strategy = get_gateway().jvm.io.uspfeast.flink.IdleAdvancingWatermarks.strategy(
        config.watermark_out_of_orderness_ms, config.idle_advance_ms, 2
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
        .process(SegmentMembership(config, runtime.repo), output_type=Types.STRING())
        .name(f"membership {config.segment}")
        .uid(f"{name}-membership")
    )
    batcher = get_gateway().jvm.io.uspfeast.flink.StringBatcher(
        config.batch_max_rows, config.batch_max_delay_ms
    )
    written = (
        java_operator(changes, f"batch {name}", CHANGE_BATCH, batcher)
        .uid(f"{name}-batch")
        .map(WriteMembership(config, runtime.repo), output_type=_MESSAGES)
        .name(f"store membership {config.segment}")
        .uid(f"{name}-store")
    )
    unbatch(written, 0, 1, f"changes {name}").uid(f"{name}-changes").sink_to(
        kafka_sink(runtime.bootstrap_servers, config.segment_topic)
    ).name(f"segment topic {config.segment_topic}").uid(f"{name}-topic-sink")
    changes.get_side_output(LATE).sink_to(
        kafka_sink(runtime.bootstrap_servers, config.late_topic)
    ).name(f"late input {config.late_topic}").uid(f"{name}-late-sink")


def by_user(signals: DataStream, name: str) -> KeyedStream:
    """``signals.key_by(user id)``, with the key read in Java (``UserKeys``).

    PyFlink's ``key_by`` runs the key selector in a Python operator of its own (one more
    JVM-to-Python crossing per record); this builds the same keyed stream, ``(key, row)``
    pairs partitioned by PyFlink's ``KeyByKeySelector``, from a Java operator instead.
    """
    gateway = get_gateway()
    keyed_rows = java_operator(
        signals,
        name,
        Types.ROW([Types.STRING(), SIGNAL_ROW]),
        gateway.jvm.io.uspfeast.flink.UserKeys(),
    )
    j_keyed = keyed_rows._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, SIGNAL_ROW, signals)


class SegmentMembership(KeyedProcessFunction):
    """Keyed by user: loads the user's MembershipState, applies the logic, saves it back.

    The state is saved with the time of the user's event-time timer, which fires at or before
    :meth:`SegmentLogic.deadline` (expiry, or the end of a start delay).
    """

    def __init__(self, config: SegmentJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.logic: Any = None
        self.state: Any = None
        self.signal_of: dict[str, str] = {}
        self.late_count = 0

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the logic from the definition; declare the keyed state."""
        from usp_feast.definitions import load_definitions
        from usp_feast.segments import SegmentLogic

        spec = load_definitions(self.repo, check_imports=False).segment(self.config.segment)
        self.logic = SegmentLogic(spec.rules())
        self.signal_of = {i.topic: i.signal for i in self.config.inputs}
        self.state = runtime_context.get_state(
            ValueStateDescriptor("membership", Types.PICKLED_BYTE_ARRAY())
        )

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        """Apply one signal event of the current user."""
        import orjson

        from usp_feast.segments import SegmentEvent

        text, topic = value
        at = ctx.timestamp()
        try:
            row = orjson.loads(text)
            event = SegmentEvent(self.signal_of[topic], str(row["event_id"]), at, row)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # Signal topics carry rows the signal jobs wrote; anything else is set aside.
            yield LATE, self._aside(topic, text, f"not a signal row ({exc!r}); not applied")
            return
        watermark = ctx.timer_service().current_watermark()
        if at <= watermark:
            # Still applied (the logic treats what it contradicts as stale), but decisions
            # the watermark already passed (an expiry) are not revisited: count it and
            # keep a copy on the late topic for audit.
            self.late_count += 1
            if self.late_count == 1 or self.late_count % 1000 == 0:
                logger.warning("%d input events arrived behind the watermark", self.late_count)
            reason = f"event time {at} ms arrived behind the watermark {watermark} ms; applied"
            yield LATE, self._aside(topic, text, reason)
        yield from self._apply(ctx, lambda state: self.logic.on_event(state, event))

    def _aside(self, topic: str, text: str, reason: str) -> str:
        import orjson

        body = {"segment": self.config.segment, "topic": topic, "reason": reason, "event": text}
        return orjson.dumps(body).decode()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """Event time reached a deadline: start or expire the membership."""
        yield from self._apply(ctx, lambda state: self.logic.advance(state, timestamp), timestamp)

    def _apply(self, ctx: Any, step: Any, fired: int | None = None) -> Any:
        import orjson

        from usp_feast.segments import MembershipState

        saved = self.state.value()
        state = MembershipState.restore(saved[0] if saved else None)
        timer = None if saved is None or saved[1] == fired else saved[1]
        changes = step(state)
        deadline = self.logic.deadline(state)
        # At most one timer per user, never later than the deadline. A renewal (the deadline
        # moves later, the common case) leaves the timer alone: it fires at the old deadline,
        # finds nothing due and is set again at the new one. That keeps timer calls off the
        # per-event path.
        if deadline is not None and (timer is None or deadline < timer):
            ctx.timer_service().register_event_time_timer(deadline)
            timer = deadline
        self.state.update((state.snapshot(), timer))
        user = ctx.get_current_key()
        for change in changes:
            yield orjson.dumps(change.to_row(self.config.segment, user)).decode()


class WriteMembership(MapFunction):
    """Writes a batch of changes to the store and returns them as segment topic messages."""

    def __init__(self, config: SegmentJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.sink: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Connect to the store through the repository's Feast config."""
        from usp_feast.feast_sink import SegmentSink

        self.sink = SegmentSink(self.repo, self.config.segment)

    def close(self) -> None:
        """Write the offline rows still buffered."""
        if self.sink is not None:
            self.sink.checkpoint()

    def map(self, value: Any) -> Row:
        """Write synchronously (a barrier may follow), then hand the messages on."""
        import orjson

        from usp_feast.segments import message_from_row, row_event_ms

        values, barrier_follows = value
        rows = [orjson.loads(v) for v in values]
        self.sink.write(rows)
        if barrier_follows:
            self.sink.checkpoint()
        messages = [orjson.dumps(message_from_row(r)).decode() for r in rows]
        times = [row_event_ms(r) for r in rows]
        return Row(messages, times)
