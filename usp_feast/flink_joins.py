"""Thin PyFlink adapter of a join signal job: keyed state and timers around the join core.

Per join signal, one pipeline::

    Kafka <left topic> + <right topic> (raw bytes, topic, partition, offset)
      → JoinKeys (Java: the side's join key; its event time as the record timestamp)
      → event-time watermarks following the slower side, moving on while input is idle (Java)
      → key by join key
      → JoinEvents (Python): each event validated against its side's contract, then applied
        to the key's :class:`~usp_feast.joins.JoinState` (keyed state on RocksDB), with one
        event-time timer per key; the timer emits the joined rows that are due
      ├→ StringBatcher (Java) → WriteJoined (Python: the versioned store through Feast)
      │    → Unbatcher (Java) → Kafka usp.signal.<name> (record time = event time)
      ├→ side output DEAD: events failing their contract, with the reasons → usp.dlq.<name>
      └→ side output LATE: events behind the watermark, and left events dropped for want of a
         right record (``missing_right.then: drop``), with why → usp.late.join.<name>

State: the join core's state per key, pickled into a ValueState. The core clears it in event
time (a right record older than ``state_ttl`` matches nothing and is dropped, and a key with
nothing left is cleared); Flink's state TTL (processing time, RocksDB compaction filter) is the
backstop for keys whose event time stops moving, set a little longer so the two never
disagree on a live stream.

Crash safety: keyed state, timers and source offsets are checkpointed together; the
StringBatcher hands its batch on before each barrier and the writer writes it synchronously, so
a completed checkpoint never covers an unwritten row. After a restore, a right record read
before the crash still enriches left events read after it; replayed input adds versions of the
same event ids, never duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.time import Time
from pyflink.datastream import (
    KeyedProcessFunction,
    KeyedStream,
    OutputTag,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from usp_feast.flink import JobRuntime, java_operator, kafka_rows, kafka_sink, unbatch
from usp_feast.flink_keyed import (
    CHANGE_BATCH,
    LATE,
    MESSAGES,
    BatchWriter,
    LateCounter,
    aside,
    keep_one_timer,
)
from usp_feast.jobs import JoinJobConfig

__all__ = ["add_join"]

# What the keyed function receives per event: (raw bytes, from the left topic, partition, offset).
SIDE_EVENT = Types.ROW(
    [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.BOOLEAN(), Types.INT(), Types.LONG()]
)
DEAD = OutputTag("dead", Types.STRING())
# Flink's processing-time TTL outlives the core's event-time expiry by this much (see above).
_TTL_MARGIN = timedelta(days=1)


def add_join(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: JoinJobConfig,
    runtime: JobRuntime,
) -> None:
    """Add one join signal's pipeline (see the module docstring) to the job."""
    from usp_feast.definitions import load_definitions
    from usp_feast.spec import JoinSignalSpec

    spec = load_definitions(runtime.repo, check_imports=False).signal(config.join)
    if not isinstance(spec, JoinSignalSpec):
        raise ValueError(f"{config.join} is not a join signal; regenerate streaming/ configs")
    name = config.name
    gateway = get_gateway()
    raw = kafka_rows(
        t_env,
        f"raw_{name}",
        columns="""
          `value` BYTES,
          `topic` STRING METADATA VIRTUAL,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL""",
        topics=[config.left_topic, config.right_topic],
        group=config.consumer_group,
        bootstrap=runtime.bootstrap_servers,
    )
    keys = gateway.jvm.io.uspfeast.flink.JoinKeys(
        config.left_topic,
        spec.left.key,
        spec.left.event_time,
        spec.right.key,
        spec.right.event_time,
    )
    keyed_rows = java_operator(
        raw, f"join keys {config.join}", Types.ROW([Types.STRING(), SIDE_EVENT]), keys
    ).uid(f"{name}-keys")
    strategy = gateway.jvm.io.uspfeast.flink.JoinKeys.watermarks(
        config.watermark_out_of_orderness_ms, config.idle_advance_ms
    )
    timed = keyed_rows.assign_timestamps_and_watermarks(WatermarkStrategy(strategy)).uid(
        f"{name}-watermarks"
    )
    # The rows are already (key, value) pairs: PyFlink's own key selector takes them as they are.
    j_keyed = timed._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    joined = (
        KeyedStream(j_keyed, SIDE_EVENT, timed)
        .process(JoinEvents(config, runtime.repo), output_type=Types.STRING())
        .name(f"join {config.join}")
        .uid(f"{name}-join")
    )
    batcher = gateway.jvm.io.uspfeast.flink.StringBatcher(
        config.batch_max_rows, config.batch_max_delay_ms
    )
    written = (
        java_operator(joined, f"batch {name}", CHANGE_BATCH, batcher)
        .uid(f"{name}-batch")
        .map(WriteJoined(runtime.repo, config.join), output_type=MESSAGES)
        .name(f"store join {config.join}")
        .uid(f"{name}-store")
    )
    unbatch(written, 0, 1, f"signals {name}").uid(f"{name}-signals").sink_to(
        kafka_sink(runtime.bootstrap_servers, config.signal_topic)
    ).name(f"signal topic {config.signal_topic}").uid(f"{name}-signal-sink")
    joined.get_side_output(DEAD).sink_to(
        kafka_sink(runtime.bootstrap_servers, config.dead_letter_topic)
    ).name(f"dead letters {config.dead_letter_topic}").uid(f"{name}-dlq-sink")
    joined.get_side_output(LATE).sink_to(
        kafka_sink(runtime.bootstrap_servers, config.late_topic)
    ).name(f"late input {config.late_topic}").uid(f"{name}-late-sink")


class JoinEvents(KeyedProcessFunction):
    """Keyed by join key: validates each event, applies it and the timers with the join core.

    Watermarks: a Flink watermark ``W`` promises no event at or before ``W``; the core takes
    the time up to which input is complete, ``W + 1``. A timer set at ``deadline - 1`` fires
    when the watermark reaches it, so at exactly ``deadline`` in the core's terms.
    """

    def __init__(self, config: JoinJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.logic: Any = None
        self.how = "latest"
        self.right_fields: tuple[str, ...] = ()
        self.sides: dict[bool, Any] = {}
        self.state: Any = None
        self.late: Any = None
        self.unmatched: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the logic and both sides' validation from the definition; declare the state."""
        from usp_feast.contracts import Contract
        from usp_feast.definitions import load_definitions, validation_dir
        from usp_feast.joins import JoinLogic
        from usp_feast.pipeline import JoinSidePipeline
        from usp_feast.processing import SignalProcessor

        config = self.config
        spec: Any = load_definitions(self.repo, check_imports=False).signal(config.join)
        self.logic = JoinLogic(spec.rules())
        self.how = spec.how
        self.right_fields = tuple(spec.right.fields)
        suites = validation_dir(self.repo)
        self.sides = {
            True: SignalProcessor(
                JoinSidePipeline(spec.left, config.join, user_key=spec.user_key),
                Contract.load(suites / config.left_suite),
                config.max_event_bytes,
            ),
            False: SignalProcessor(
                JoinSidePipeline(spec.right, config.join),
                Contract.load(suites / config.right_suite),
                config.max_event_bytes,
            ),
        }
        keep = spec.state_ttl + spec.missing_right.wait + spec.out_of_orderness + _TTL_MARGIN
        ttl = (
            StateTtlConfig.new_builder(Time.milliseconds(keep // timedelta(milliseconds=1)))
            .update_ttl_on_create_and_write()
            .never_return_expired()
            .cleanup_in_rocksdb_compact_filter(1000)
            .build()
        )
        descriptor = ValueStateDescriptor("join", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(ttl)
        self.state = runtime_context.get_state(descriptor)
        self.late = LateCounter(runtime_context, "arrived behind the watermark (not joined)")
        self.unmatched = runtime_context.get_metrics_group().counter("usp_join_unmatched")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        """Validate one event of either side and apply it to its key's state."""
        from usp_feast.joins import JoinState
        from usp_feast.processing import DeadLetter, SourcePosition

        raw, is_left, partition, offset = value
        config = self.config
        topic = config.left_topic if is_left else config.right_topic
        original = bytes(raw or b"")
        outcome = self.sides[is_left].process(original, SourcePosition(topic, partition, offset))
        if isinstance(outcome, DeadLetter):
            yield DEAD, outcome.to_json().decode()
            return
        record = outcome.row
        watermark = ctx.timer_service().current_watermark() + 1
        saved = self.state.value()
        state, timer = saved if saved else (JoinState(), None)
        add = self.logic.add_left if is_left else self.logic.add_right
        if not add(state, record, watermark):
            self.late.add()
            reason = (
                f"event time {record.time_ms} ms is behind the watermark ({watermark - 1} ms): "
                "the join has answered for that time already; not joined"
            )
            yield LATE, self._aside(topic, original, reason)
            return
        timer = keep_one_timer(ctx, timer, _timer_for(self.logic.deadline(state)))
        self.state.update((state, timer))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """The watermark reached the deadline: emit the joined rows that are due."""
        import orjson

        saved = self.state.value()
        if not saved:
            return
        state, _ = saved
        fired = self.logic.fire(state, timestamp + 1)
        for joined in fired.joined:
            yield orjson.dumps(joined.to_row(self.right_fields, self.how)).decode()
        for left in fired.dropped:
            self.unmatched.inc()
            reason = (
                f"no {self.config.right_topic} record matched join key {ctx.get_current_key()!r}; "
                "dropped (missing_right.then: drop)"
            )
            yield LATE, self._aside(self.config.left_topic, left.event_id.encode(), reason)
        deadline = self.logic.deadline(state)
        if deadline is None:
            self.state.clear()
        else:
            self.state.update((state, keep_one_timer(ctx, None, _timer_for(deadline))))

    def _aside(self, topic: str, original: bytes, reason: str) -> str:
        text = original.decode("utf-8", errors="replace")
        return aside({"join": self.config.join}, topic, text, reason)


def _timer_for(deadline: int | None) -> int | None:
    return None if deadline is None else deadline - 1


class WriteJoined(BatchWriter):
    """Writes joined rows to the versioned store (through Feast); they go on to the topic."""

    def make_sink(self) -> Any:
        """The join signal's feature view, written like any signal's."""
        from usp_feast.feast_sink import FeastSink

        return FeastSink(self.repo, self.definition)

    def published(self, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
        """The joined rows, at each left event's time."""
        import orjson

        from usp_feast.segments import row_event_ms

        return [orjson.dumps(r).decode() for r in rows], [row_event_ms(r) for r in rows]
