"""Thin PyFlink adapter: wires Kafka, the pure signal processor and the store together.

Per signal, one pipeline::

    Kafka (raw bytes + partition/offset/timestamp)
      → ValidateAndTransform  ── dead letters ──→ Kafka usp.dlq.<signal>
      → event-time watermarks (bounded out of orderness)
      ├→ StoreWriter (keyed buffer in Flink state, flushed by size or a short timer)
      │     → the Feast online store plugin → versioned Redis store
      └→ Kafka usp.signal.<signal>

The store buffer lives in Flink keyed state and its flush timers are checkpointed, so a
crash between a checkpoint and a flush loses nothing: the restored job flushes what was
buffered and Kafka replays what came after (the store is idempotent for readers).
"""

from __future__ import annotations

import logging
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.datastream.state import ListStateDescriptor
from pyflink.table import StreamTableEnvironment

from usp_feast.jobs import SignalJobConfig

__all__ = ["JobRuntime", "build_job", "jar_paths", "latest_checkpoint"]

logger = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
_STORE_BUCKETS = 8
_JAR_NAMES = ("flink-connector-kafka.jar", "kafka-clients.jar")


def jar_paths() -> list[Path]:
    """The Kafka connector jars: ``$USP_FLINK_JARS`` or the ones setup extracted into the venv.

    Raises:
        FileNotFoundError: Naming the missing jar and the setup step that provides it.
    """
    folder = Path(os.environ.get("USP_FLINK_JARS") or Path(sys.prefix) / "flink-jars")
    paths = [folder / name for name in _JAR_NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Flink Kafka connector jar(s) missing: {', '.join(missing)}; run scripts/setup.sh "
            "(it extracts them) or set USP_FLINK_JARS to a folder holding them"
        )
    return paths


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) under ``folder``."""
    if not folder.is_dir():
        return None
    done = [m.parent for m in folder.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


@dataclass(frozen=True)
class JobRuntime:
    """Deployment facts a job reads at start: never written into generated configs."""

    repo: Path
    bootstrap_servers: str
    checkpoint_dir: Path
    parallelism: int = 1


def build_job(
    configs: Sequence[SignalJobConfig], runtime: JobRuntime
) -> StreamExecutionEnvironment:
    """One Flink job running the pipelines of ``configs`` (several signals may share a job)."""
    first = configs[0]
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.fn-execution.bundle.time", str(first.bundle_time_ms))
    conf.set_string("python.fn-execution.bundle.size", str(first.bundle_size))
    conf.set_string("execution.buffer-timeout.interval", f"{first.buffer_timeout_ms} ms")
    conf.set_string("pipeline.jars", ";".join(p.as_uri() for p in jar_paths()))
    conf.set_string("execution.checkpointing.dir", runtime.checkpoint_dir.resolve().as_uri())
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("restart-strategy.type", "exponential-delay")
    restore = latest_checkpoint(runtime.checkpoint_dir)
    if restore is not None:
        logger.warning("restoring from checkpoint %s", restore)
        conf.set_string("execution.state-recovery.path", str(restore))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(runtime.parallelism)
    env.enable_checkpointing(first.checkpoint_interval_ms)
    t_env = StreamTableEnvironment.create(env)
    for config in configs:
        _add_signal(env, t_env, config, runtime)
    return env


def _add_signal(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: SignalJobConfig,
    runtime: JobRuntime,
) -> None:
    table = f"raw_{config.signal}"
    # The raw format keeps the original bytes (for dead letters); metadata columns give the
    # source position and the broker's append time.
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE `{table}` (
          `value` BYTES,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `broker_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{config.source_topic}',
          'properties.bootstrap.servers' = '{runtime.bootstrap_servers}',
          'properties.group.id' = '{config.consumer_group}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.fetch.max.wait.ms' = '20',
          'scan.startup.mode' = 'group-offsets',
          'format' = 'raw'
        )"""
    )
    raw = t_env.to_data_stream(t_env.from_path(table))
    processed = (
        raw.process(ValidateAndTransform(config, runtime.repo), output_type=Types.STRING())
        .name(f"validate+transform {config.signal}")
        .uid(f"{config.signal}-validate-transform")
    )
    timed = processed.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(config.watermark_out_of_orderness_ms)
        ).with_timestamp_assigner(EventTime())
    ).uid(f"{config.signal}-watermarks")
    (
        timed.key_by(_bucket, key_type=Types.INT())
        .process(StoreWriter(config, runtime.repo), output_type=Types.STRING())
        .name(f"store {config.signal}")
        .uid(f"{config.signal}-store")
    )
    timed.sink_to(_kafka_sink(runtime.bootstrap_servers, config.signal_topic)).name(
        f"signal topic {config.signal_topic}"
    ).uid(f"{config.signal}-signal-sink")
    processed.get_side_output(DEAD_LETTERS).sink_to(
        _kafka_sink(runtime.bootstrap_servers, config.dead_letter_topic)
    ).name(f"dead letters {config.dead_letter_topic}").uid(f"{config.signal}-dlq-sink")


def _kafka_sink(bootstrap: str, topic: str) -> KafkaSink:
    return (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "2")
        .build()
    )


def _bucket(row_json: str) -> int:
    # Spreads the store buffer over a few keys so parallel subtasks share the work.
    return zlib.crc32(row_json.encode()) % _STORE_BUCKETS


class EventTime(TimestampAssigner):
    """Reads the event time the processor put first in each row's JSON."""

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        """Epoch milliseconds of the row's event time."""
        import orjson

        from usp_feast.pipeline import parse_event_time
        from usp_feast.versions import to_micros

        return to_micros(parse_event_time(orjson.loads(value)["event_ts"])) // 1000


class ValidateAndTransform(ProcessFunction):
    """Runs :class:`usp_feast.processing.SignalProcessor`; dead letters go to a side output."""

    def __init__(self, config: SignalJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.processor: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Load the contract and the transform once per task."""
        from usp_feast.contracts import Contract
        from usp_feast.definitions import load_definitions, load_transform, validation_dir
        from usp_feast.pipeline import SignalPipeline
        from usp_feast.processing import SignalProcessor

        spec = load_definitions(self.repo, check_imports=False).signal(self.config.signal)
        contract = Contract.load(validation_dir(self.repo) / self.config.suite)
        pipeline = SignalPipeline(spec, load_transform(spec, self.repo))
        self.processor = SignalProcessor(pipeline, contract, self.config.max_event_bytes)

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Any:
        """Yield the row JSON, or the dead letter to the side output."""
        from usp_feast.processing import Accepted, SourcePosition, row_to_json

        position = SourcePosition(
            topic=self.config.source_topic,
            partition=value[1],
            offset=value[2],
            timestamp_ms=_epoch_ms(value[3]),
        )
        outcome = self.processor.process(bytes(value[0] or b""), position)
        if outcome is None:
            return
        if isinstance(outcome, Accepted):
            yield row_to_json(outcome.row).decode()
        else:
            yield DEAD_LETTERS, outcome.to_json().decode()


def _epoch_ms(moment: Any) -> int | None:
    # Process mode hands over a datetime; thread mode a java.time.Instant (via pemja).
    if moment is None:
        return None
    if hasattr(moment, "timestamp"):
        return int(moment.timestamp() * 1000)
    try:
        return int(moment.toEpochMilli())
    except Exception:  # an unknown representation costs the metric, not the event
        return None


class StoreWriter(KeyedProcessFunction):
    """Batches rows into Feast online-store writes by size or after ``store_flush_ms``."""

    def __init__(self, config: SignalJobConfig, repo: Path) -> None:
        self.config = config
        self.repo = repo
        self.sink: Any = None
        self.buffer: Any = None
        self.pending: dict[int, int] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        """Connect to the store through the repository's Feast config."""
        from usp_feast.feast_sink import FeastSink

        self.sink = FeastSink(self.repo, self.config.signal)
        self.buffer = runtime_context.get_list_state(ListStateDescriptor("rows", Types.STRING()))

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Any:
        """Buffer the row; flush when the batch is full, else make sure a timer is set."""
        self.buffer.add(value)
        key = ctx.get_current_key()
        count = self.pending.get(key, 0) + 1
        self.pending[key] = count
        if count >= self.config.store_batch_size:
            self._flush(key)
        elif count == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(
                timers.current_processing_time() + self.config.store_flush_ms
            )
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """Flush whatever this key buffered (also after a restore from a checkpoint)."""
        self._flush(ctx.get_current_key())
        return iter(())

    def _flush(self, key: int) -> None:
        rows = list(self.buffer.get() or [])
        if rows:
            self.sink.write(rows)
        self.buffer.clear()
        self.pending[key] = 0
