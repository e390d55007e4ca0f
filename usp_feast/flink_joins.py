"""Thin PyFlink adapter of a join signal job: keyed state and timers around the join core.

Per join signal, one pipeline::

    per side: Kafka <topic> (raw bytes, partition, offset, broker time)
      → MicroBatcher (Java) → ValidateSide (Python: the side's contract and fields, batched)
      ├→ Unbatcher (Java): valid events, event time as record timestamp → watermarks of the
      │    side, moving on while it is idle (Java)
      └→ Unbatcher (Java): dead letters with the reasons → usp.dlq.<name>
    both sides' valid events (Flink takes the slower side's watermark)
      → JoinKeys (Java: the join key) → key by join key
      → JoinEvents (Python): each event applied to the key's :class:`~usp_feast.joins.JoinState`
        (keyed state on RocksDB), one event-time timer per key; the timer emits the joined
        rows that are due
      ├→ StringBatcher (Java) → WriteJoined (Python: the versioned store through Feast)
      │    → Unbatcher (Java) → Kafka usp.signal.<name> (record time = event time)
      └→ side output LATE: events behind the watermark, and left events dropped for want of a
         right record (``missing_right.then: drop``), with why → usp.late.join.<name>

Validation comes before event time: only an event that passed its contract sets a timestamp,
so a malformed event (a broken listing id with a time hours ahead) cannot move the watermark.

State: the join core's state per key, pickled into a ValueState. The core clears it in event
time (a right record older than ``state_ttl`` matches nothing and is dropped, and a key with
nothing left is cleared); Flink's state TTL (processing time, RocksDB compaction filter) is the
backstop for keys whose event time stops moving, set a day longer so the two never disagree on
a live stream.

Crash safety: keyed state, timers and source offsets are checkpointed together; the batchers
hand their batches on before each barrier and the writer writes synchronously, so a completed
checkpoint never covers an unwritten row. After a restore, a right record read before the
crash still enriches left events read after it; replayed input adds versions of the same
event ids, never duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types, WatermarkStrategy
from pyflink.common.time import Time
from pyflink.datastream import (
    KeyedProcessFunction,
    MapFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from usp_feast.flink import (
    RESULT_BATCH,
    JobRuntime,
    config_metrics,
    kafka_sink,
    raw_batches,
    release_metrics,
    unbatch,
)
from usp_feast.flink_keyed import (
    LATE,
    BatchWriter,
    LateCounter,
    as_messages,
    aside,
    keep_one_timer,
    keyed_by,
    stamped,
    store_and_publish,
    timer_for,
)
from usp_feast.job_metrics import JobIdentity
from usp_feast.jobs import JoinJobConfig

__all__ = ["add_join"]

# What the keyed function receives per event: (record JSON, from the left side).
SIDE_EVENT = Types.ROW([Types.STRING(), Types.BOOLEAN()])
# Flink's processing-time TTL outlives the core's event-time expiry by this much (see above).
_TTL_MARGIN = timedelta(days=1)


def add_join(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: JoinJobConfig,
    runtime: JobRuntime,
) -> None:
    """Add one join signal's pipeline (see the module docstring) to the job."""
    name = config.name
    gateway = get_gateway()
    events, dead_letters = [], []
    for is_left in (True, False):
        side = "left" if is_left else "right"
        topic = config.left_topic if is_left else config.right_topic
        batches = raw_batches(
            t_env, f"raw_{name}_{side}", topic, config, runtime.bootstrap_servers
        ).uid(f"{name}-{side}-batch")
        results = (
            batches.map(
                ValidateSide(config, runtime.repo, is_left, runtime.identity),
                output_type=RESULT_BATCH,
            )
            .name(f"validate {config.join} {side}")
            .uid(f"{name}-{side}-validate")
        )
        # Watermarks per side, from validated events only; Flink takes the slower side's where
        # the two meet, so one side read ahead (a backlog, a slow start) cannot make the
        # other's events late.
        strategy = gateway.jvm.io.uspfeast.flink.IdleAdvancingWatermarks.onRecordTime(
            config.watermark_out_of_orderness_ms, config.idle_advance_ms
        )
        events.append(
            unbatch(results, 0, 1, f"{side} events {name}")
            .uid(f"{name}-{side}-events")
            .assign_timestamps_and_watermarks(WatermarkStrategy(strategy))
            .uid(f"{name}-{side}-watermarks")
        )
        dead_letters.append(
            unbatch(results, 2, -1, f"{side} dead letters {name}").uid(f"{name}-{side}-dlq")
        )
    joined = (
        keyed_by(
            events[0].union(events[1]),
            f"join keys {config.join}",
            gateway.jvm.io.uspfeast.flink.JoinKeys(),
            SIDE_EVENT,
        )
        .process(JoinEvents(config, runtime.repo), output_type=Types.STRING())
        .name(f"join {config.join}")
        .uid(f"{name}-join")
    )
    store_and_publish(
        joined,
        config,
        runtime,
        name=name,
        write=WriteJoined(runtime.repo, config, runtime.identity),
        store_label=f"store join {config.join}",
        output_topic=config.signal_topic,
        late_topic=config.late_topic,
    )
    dead_letters[0].union(dead_letters[1]).sink_to(
        kafka_sink(runtime.bootstrap_servers, config.dead_letter_topic)
    ).name(f"dead letters {config.dead_letter_topic}").uid(f"{name}-dlq-sink")


def _load_join(repo: Path, name: str) -> Any:
    from usp_feast.definitions import load_definitions
    from usp_feast.spec import JoinSignalSpec

    spec = load_definitions(repo, check_imports=False).signal(name)
    if not isinstance(spec, JoinSignalSpec):
        raise ValueError(f"{name} is not a join signal; regenerate the streaming/ configs")
    return spec


class ValidateSide(MapFunction):
    r"""One side's batch of raw records in; its valid events (keyed) and dead letters out.

    A valid event leaves as ``<L|R><join key>\x1f<record JSON>`` with its event time (the
    format the Java ``JoinKeys`` reads); the record holds the side's fields and the event's
    source position, so an event set aside later can be found again.
    """

    def __init__(self, config: JoinJobConfig, repo: Path, is_left: bool, job: JobIdentity) -> None:
        self.config = config
        self.repo = repo
        self.is_left = is_left
        self.job = job
        self.processor: Any = None
        self.metrics: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Load the side's contract and fields from the definition, once per task."""
        from usp_feast.contracts import Contract
        from usp_feast.definitions import validation_dir
        from usp_feast.pipeline import JoinSidePipeline
        from usp_feast.processing import SignalProcessor

        config, spec = self.config, _load_join(self.repo, self.config.join)
        side = JoinSidePipeline(
            spec.left if self.is_left else spec.right,
            config.join,
            user_key=spec.user_key if self.is_left else None,
        )
        suite = config.left_suite if self.is_left else config.right_suite
        contract = Contract.load(validation_dir(self.repo) / suite)
        self.processor = SignalProcessor(side, contract, config.max_event_bytes)
        self.metrics = config_metrics(config, self.job)

    def close(self) -> None:
        """Let the job's metrics go once this pipeline's last task here has closed."""
        if self.metrics is not None:
            release_metrics(self.config, self.job)

    def map(self, value: Any) -> Row:
        """One MicroBatcher batch in; (keyed events, event ms, dead letters) out."""
        import orjson

        from usp_feast.processing import DeadLetter, SourcePosition

        topic = self.config.left_topic if self.is_left else self.config.right_topic
        tag = "L" if self.is_left else "R"
        values, partitions, offsets, broker_ms, _ = value
        read_at = time.time()
        events, times, dead_letters = [], [], []
        for i in range(len(values)):
            at = broker_ms[i] if broker_ms[i] >= 0 else None
            position = SourcePosition(topic, partitions[i], offsets[i], at)
            outcome = self.processor.process(bytes(values[i] or b""), position)
            if isinstance(outcome, DeadLetter):
                dead_letters.append(outcome.to_json().decode())
            elif outcome is not None:
                key, r = outcome.row
                held = [
                    r.time_ms,
                    r.event_id,
                    r.event_ts,
                    r.fields,
                    topic,
                    partitions[i],
                    offsets[i],
                ]
                events.append(f"{tag}{key}\x1f{orjson.dumps(held).decode()}")
                times.append(r.time_ms)
        self.metrics.transformed(len(values), time.time() - read_at)
        self.metrics.batch_read(read_at, len(values), times, broker_ms)
        self.metrics.dead_letters += len(dead_letters)
        return Row(events, times, dead_letters)


class JoinEvents(KeyedProcessFunction):
    """Keyed by join key: applies each valid event and each timer with the join core.

    One event-time timer per key, at the core's deadline (see :func:`timer_for`).
    """

    def __init__(self, config: JoinJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.logic: Any = None
        self.how = "latest"
        self.right_fields: tuple[str, ...] = ()
        self.state: Any = None
        self.late: Any = None
        self.unmatched: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the logic from the definition; declare the state."""
        from usp_feast.joins import JoinLogic

        spec = _load_join(self.repo, self.config.join)
        self.logic = JoinLogic(spec.rules())
        self.how = spec.how
        self.right_fields = tuple(spec.right.fields)
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
        """Apply one valid event of either side to its key's state."""
        import orjson

        from usp_feast.joins import JoinState, SideRecord

        text, is_left = value
        time_ms, event_id, event_ts, fields, *source = orjson.loads(text)
        record = SideRecord(time_ms, event_id, event_ts, fields)
        watermark = ctx.timer_service().current_watermark() + 1
        saved = self.state.value()
        state, timer = saved if saved else (JoinState(), None)
        add = self.logic.add_left if is_left else self.logic.add_right
        if not add(state, record, watermark):
            self.late.add()
            reason = (
                f"event time {time_ms} ms is behind the watermark ({watermark - 1} ms): "
                "the join has answered for that time already; not joined"
            )
            yield LATE, self._aside(record, reason, *source)
            return
        timer = keep_one_timer(ctx, timer, timer_for(self.logic.deadline(state)))
        self.state.update((state, timer))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """The watermark reached the deadline: emit the joined rows that are due."""
        saved = self.state.value()
        if not saved:
            return
        state, _ = saved
        fired = self.logic.fire(state, timestamp + 1)
        for joined in fired.joined:
            yield stamped(joined.to_row(self.right_fields, self.how))
        for left in fired.dropped:
            self.unmatched.inc()
            reason = (
                f"no {self.config.right_topic} record matched join key {ctx.get_current_key()!r}; "
                "dropped (missing_right.then: drop)"
            )
            yield LATE, self._aside(left, reason, self.config.left_topic)
        deadline = self.logic.deadline(state)
        if deadline is None:
            self.state.clear()
        else:
            self.state.update((state, keep_one_timer(ctx, None, timer_for(deadline))))

    def _aside(
        self, record: Any, reason: str, topic: str, partition: int = -1, offset: int = -1
    ) -> str:
        """The late-topic message: the event as the join holds it, where it came from, why."""
        import orjson

        event = {"event_id": record.event_id, "event_ts": record.event_ts, **record.fields}
        where = {"join": self.config.join, "partition": partition, "offset": offset}
        return aside(where, topic, orjson.dumps(event).decode(), reason)


class WriteJoined(BatchWriter):
    """Writes joined rows to the versioned store (through Feast); they go on to the topic."""

    def make_sink(self) -> Any:
        """The join signal's feature view, written like any signal's."""
        from usp_feast.feast_sink import FeastSink

        return FeastSink(self.repo, self.definition, offline=True)

    def published(self, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
        """The joined rows, at each left event's time."""
        return as_messages(rows)
