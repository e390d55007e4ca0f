"""Thin PyFlink adapter: wires Kafka, the pure signal processor and the store together.

Per signal, one pipeline::

    Kafka (raw bytes + partition/offset/timestamp)
      → MicroBatcher (Java: up to ``batch_max_rows`` records or ``batch_max_delay_ms``)
      → ProcessBatch (Python: validate, transform, write the rows through Feast to the store;
        each version also goes to the offline Parquet parts, flushed before checkpoint barriers)
      ├→ Unbatcher (Java) → event-time watermarks → Kafka usp.signal.<signal>
      └→ Unbatcher (Java) → Kafka usp.dlq.<signal>
    (each Unbatcher starts a task of its own, so the sinks' checkpoint flushes wait alone)

Why batches: in PyFlink every crossing between the JVM and Python costs more than validating
an event, so records cross in batches of at most a few milliseconds' worth (one call instead of
hundreds) and each event is still validated and transformed on its own.

Crash safety without state: the MicroBatcher hands its batch on before every checkpoint
barrier, and ProcessBatch writes synchronously, so when a checkpoint completes every record its
source offsets cover is in the store. After a crash Kafka replays the rest; the store is
idempotent for readers.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Duration, Row, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import (
    DataStream,
    MapFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment

from usp_feast.connections import kafka_java_properties, kafka_table_options
from usp_feast.job_metrics import JobIdentity, latest_checkpoint
from usp_feast.jobs import (
    AnyJobConfig,
    JobSettings,
    JoinJobConfig,
    SegmentJobConfig,
    SessionJobConfig,
    SignalJobConfig,
)

__all__ = [
    "PROMETHEUS_REPORTER",
    "RAW_COLUMNS",
    "RECORD_BATCH",
    "RESULT_BATCH",
    "JobRuntime",
    "build_job",
    "jar_paths",
    "java_operator",
    "kafka_rows",
    "kafka_sink",
    "micro_batches",
    "prometheus_reporter_jar",
    "raw_batches",
    "unbatch",
    "warm_up_job",
]

logger = logging.getLogger(__name__)

# MicroBatcher output: parallel arrays of (value bytes, partition, offset, broker ms), and
# whether a checkpoint barrier follows.
RECORD_BATCH = Types.ROW(
    [
        Types.OBJECT_ARRAY(Types.PRIMITIVE_ARRAY(Types.BYTE())),
        Types.PRIMITIVE_ARRAY(Types.INT()),
        Types.PRIMITIVE_ARRAY(Types.LONG()),
        Types.PRIMITIVE_ARRAY(Types.LONG()),
        Types.BOOLEAN(),
    ]
)
# ProcessBatch output: (signal row JSON, event ms per row, dead-letter JSON). Lists, because
# thread mode hands Python lists to Java as java.util.List whatever the declared type.
RESULT_BATCH = Types.ROW(
    [Types.LIST(Types.STRING()), Types.LIST(Types.LONG()), Types.LIST(Types.STRING())]
)
# Raw events as micro_batches takes them: the original bytes (for dead letters), the source
# position and the broker's append time.
RAW_COLUMNS = """
  `value` BYTES,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `broker_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL"""
_JAR_NAMES = ("flink-connector-kafka.jar", "kafka-clients.jar", "usp-flink-ops.jar")
PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def prometheus_reporter_jar() -> Path:
    """Flink's Prometheus reporter, shipped in the PyFlink wheel's ``plugins/`` folder."""
    import pyflink

    return next(Path(pyflink.__file__).parent.glob("plugins/metrics-prometheus/*.jar"))


def jar_paths() -> list[Path]:
    """The job's jars (Kafka connector, the project's operators): ``$USP_FLINK_JARS`` or the venv's.

    Raises:
        FileNotFoundError: Naming the missing jar and the setup step that provides it.
    """
    folder = Path(os.environ.get("USP_FLINK_JARS") or Path(sys.prefix) / "flink-jars")
    paths = [folder / name for name in _JAR_NAMES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"Flink job jar(s) missing: {', '.join(missing)}; run scripts/setup.sh (it extracts "
            "the Kafka connector and builds java/) or set USP_FLINK_JARS to a folder holding them"
        )
    return paths


@dataclass(frozen=True)
class JobRuntime:
    """Deployment facts a job reads at start: never written into generated configs."""

    repo: Path
    bootstrap_servers: str
    checkpoint_dir: Path
    parallelism: int = 1
    flink_metrics_port: int | None = None
    """Where Flink's own Prometheus reporter serves (restarts, checkpoints, backpressure)."""
    checkpoint_uri: str | None = None
    """Checkpoints on shared storage (``s3://...``) instead of ``checkpoint_dir``; restoring
    is then the deployment's business (the Kubernetes operator's ``upgradeMode``)."""
    jobmanager: str | None = None
    """``host:port`` of a Flink cluster's REST endpoint to submit to; None runs a mini-cluster."""
    python_path: tuple[str, ...] = ()
    """What a cluster's TaskManagers put on their Python path: packages, usp_feast, the repo."""
    job_name: str = "usp"
    """The job's name (``streaming/usp_job.py`` names it after its definitions)."""

    @property
    def identity(self) -> JobIdentity:
        """What the job's Python steps label their metrics with, wherever they run."""
        local = None if self.checkpoint_uri else self.checkpoint_dir.resolve()
        return JobIdentity(self.job_name, self.bootstrap_servers, local)


def build_job(configs: Sequence[AnyJobConfig], runtime: JobRuntime) -> StreamExecutionEnvironment:
    """One Flink job running the pipelines of ``configs`` (any kinds may share one).

    The job keeps its keyed state on RocksDB when any pipeline asks for it (joins do: their
    state grows with distinct keys, so it may outgrow memory), else on the heap.
    """
    from usp_feast.flink_joins import add_join
    from usp_feast.flink_segments import add_segment
    from usp_feast.flink_sessions import add_session

    first = configs[0]
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("execution.buffer-timeout.interval", f"{first.buffer_timeout_ms} ms")
    # Not Path.as_uri(): Flink does not undo its percent-encoding, so a job named a+b would
    # checkpoint into "a%2Bb" and never find that checkpoint again on restart.
    conf.set_string(
        "execution.checkpointing.dir",
        runtime.checkpoint_uri or f"file://{runtime.checkpoint_dir.resolve()}",
    )
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    conf.set_string("execution.checkpointing.num-retained", "2")
    conf.set_string("restart-strategy.type", "exponential-delay")
    if runtime.jobmanager is not None:
        # The TaskManagers' embedded interpreters import the job's code from these folders
        # (the cluster shares this machine's file system, see usp_feast.cluster).
        conf.set_string("python.pythonpath", os.pathsep.join(runtime.python_path))
    elif runtime.flink_metrics_port is not None:
        conf.set_string("metrics.reporter.prom.factory.class", PROMETHEUS_REPORTER)
        conf.set_string("metrics.reporter.prom.port", str(runtime.flink_metrics_port))
    if any(getattr(c, "state_backend", "hashmap") == "rocksdb" for c in configs):
        conf.set_string("state.backend.type", "rocksdb")
        # Each checkpoint uploads only the RocksDB files that changed since the last one.
        conf.set_string("execution.checkpointing.incremental", "true")
    restore = None if runtime.checkpoint_uri else latest_checkpoint(runtime.checkpoint_dir)
    if restore is not None:
        logger.warning("restoring from checkpoint %s", restore)
        conf.set_string("execution.state-recovery.path", str(restore))
        # A checkpoint of an older job version may hold state of operators that no longer
        # exist (the source offsets, which matter, keep their operator): start anyway.
        conf.set_string("execution.state-recovery.ignore-unclaimed-state", "true")
    env = _environment(conf, runtime)
    # add_jars also puts them on this client's class path, where the Java operators are built.
    env.add_jars(*(p.as_uri() for p in jar_paths()))
    env.set_parallelism(runtime.parallelism)
    env.enable_checkpointing(first.checkpoint_interval_ms)
    t_env = StreamTableEnvironment.create(env)
    for config in configs:
        if isinstance(config, SegmentJobConfig):
            add_segment(env, t_env, config, runtime)
        elif isinstance(config, SessionJobConfig):
            add_session(env, t_env, config, runtime)
        elif isinstance(config, JoinJobConfig):
            add_join(env, t_env, config, runtime)
        else:
            _add_signal(env, t_env, config, runtime)
    return env


def _environment(conf: Configuration, runtime: JobRuntime) -> StreamExecutionEnvironment:
    """A local mini-cluster, or a client of the cluster at ``runtime.jobmanager``."""
    if runtime.jobmanager is None:
        return StreamExecutionEnvironment.get_execution_environment(conf)
    return _remote_environment(conf, runtime.jobmanager)


def _remote_environment(conf: Configuration, jobmanager: str) -> StreamExecutionEnvironment:
    # PyFlink's get_execution_environment is always local outside `flink run`: build Java's
    # remote environment directly (it submits over the JobManager's REST endpoint).
    host, _, port = jobmanager.rpartition(":")
    gateway = get_gateway()
    no_jars = gateway.new_array(gateway.jvm.String, 0)  # add_jars ships them, as locally
    j_env = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
    return StreamExecutionEnvironment(
        j_env.createRemoteEnvironment(host, int(port), conf._j_configuration, no_jars)
    )


class _WarmUp(MapFunction):
    """Imports what every pipeline's Python steps import, in the TaskManager it runs in."""

    def open(self, runtime_context: RuntimeContext) -> None:
        """The import is the work: it stays in the TaskManager's one embedded interpreter."""
        import usp_feast.feast_sink
        import usp_feast.flink_joins
        import usp_feast.flink_keyed
        import usp_feast.flink_segments
        import usp_feast.flink_sessions
        import usp_feast.processing  # noqa: F401

    def map(self, value: Any) -> Any:
        """Passes the element on (nothing reads it)."""
        return value


def warm_up_job(jobmanager: str, python_path: Sequence[str], parallelism: int) -> None:
    """Run a short job with a task in ``parallelism`` slots, importing the pipelines' Python.

    A job's Python steps import feast and the rest on first use, which costs seconds in a
    fresh TaskManager; a standby warmed this way takes over a failed task without that cost.
    """
    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.pythonpath", os.pathsep.join(python_path))
    env = _remote_environment(conf, jobmanager)
    env.set_parallelism(parallelism)
    (
        env.from_collection(list(range(parallelism)), type_info=Types.INT())
        .rebalance()
        .map(_WarmUp(), output_type=Types.INT())
        .filter(lambda _: False)
        .print()
    )
    env.execute("usp: warm-up")


def _add_signal(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: SignalJobConfig,
    runtime: JobRuntime,
) -> None:
    batches = raw_batches(
        t_env, f"raw_{config.signal}", config.source_topic, config, runtime.bootstrap_servers
    ).uid(f"{config.signal}-batch")
    results = (
        batches.map(ProcessBatch(config, runtime.repo, runtime.identity), output_type=RESULT_BATCH)
        .name(f"validate+transform+store {config.signal}")
        .uid(f"{config.signal}-process")
    )
    # The Kafka sinks run in tasks of their own, fed with whole batches: a sink waits for the
    # broker's acknowledgements at every checkpoint, and chained to the main task that wait
    # would hold up validation and the store writes (freshness) with it.
    signals = (
        unbatch(results, 0, 1, f"signals {config.signal}")
        .start_new_chain()
        .uid(f"{config.signal}-signals")
    )
    # Record timestamps are the events' times (set by the Unbatcher), so the watermark
    # strategy needs no Python timestamp assigner.
    signals.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(config.watermark_out_of_orderness_ms)
        )
    ).uid(f"{config.signal}-watermarks").sink_to(
        kafka_sink(runtime.bootstrap_servers, config.signal_topic)
    ).name(f"signal topic {config.signal_topic}").uid(f"{config.signal}-signal-sink")
    dead_letters = (
        unbatch(results, 2, -1, f"dead letters {config.signal}")
        .start_new_chain()
        .uid(f"{config.signal}-dead-letters")
    )
    dead_letters.sink_to(kafka_sink(runtime.bootstrap_servers, config.dead_letter_topic)).name(
        f"dead letters {config.dead_letter_topic}"
    ).uid(f"{config.signal}-dlq-sink")


def kafka_rows(
    t_env: StreamTableEnvironment,
    table: str,
    *,
    columns: str,
    topics: Sequence[str],
    group: str,
    bootstrap: str,
) -> DataStream:
    """Rows of Kafka ``topics`` (raw format: the value plus the given metadata ``columns``).

    Reads from the consumer group's committed offsets (the earliest on a first start), with a
    short fetch wait so that a quiet topic does not hold records back. SASL and TLS settings
    come from the environment when the job is built
    (:func:`usp_feast.connections.kafka_table_options`).
    """
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE `{table}` ({columns}
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{";".join(topics)}',
          'properties.bootstrap.servers' = '{bootstrap}',
          'properties.group.id' = '{group}',
          'properties.auto.offset.reset' = 'earliest',
          'properties.fetch.max.wait.ms' = '20',{kafka_table_options()}
          'scan.startup.mode' = 'group-offsets',
          'format' = 'raw'
        )"""
    )
    return t_env.to_data_stream(t_env.from_path(table))


def raw_batches(
    t_env: StreamTableEnvironment, table: str, topic: str, config: JobSettings, bootstrap: str
) -> DataStream:
    """Raw records of ``topic`` (:data:`RAW_COLUMNS`) in :data:`RECORD_BATCH` batches."""
    raw = kafka_rows(
        t_env,
        table,
        columns=RAW_COLUMNS,
        topics=[topic],
        group=config.consumer_group,
        bootstrap=bootstrap,
    )
    return micro_batches(raw, config.batch_max_rows, config.batch_max_delay_ms, f"batch {table}")


def micro_batches(raw: DataStream, max_rows: int, max_delay_ms: int, name: str) -> DataStream:
    """Kafka rows (value, partition, offset, broker time) → :data:`RECORD_BATCH` rows.

    Uses the project's Java ``MicroBatcher`` (``java/``, built by setup).
    """
    operator = get_gateway().jvm.io.uspfeast.flink.MicroBatcher(max_rows, max_delay_ms)
    return java_operator(raw, name, RECORD_BATCH, operator)


def unbatch(results: DataStream, field: int, timestamp_field: int, name: str) -> DataStream:
    """One list field of each batch result → single string records.

    A ``timestamp_field`` of -1 leaves the records without timestamps; otherwise that list
    field holds each record's timestamp (epoch ms). Uses the project's Java ``Unbatcher``.
    """
    operator = get_gateway().jvm.io.uspfeast.flink.Unbatcher(field, timestamp_field)
    return java_operator(results, name, Types.STRING(), operator)


def java_operator(stream: DataStream, name: str, out_type: Any, operator: Any) -> DataStream:
    """Apply one of the project's Java stream operators (``java/``) to ``stream``."""
    j_stream = stream._j_data_stream.transform(name, out_type.get_java_type_info(), operator)
    return DataStream(j_stream)


def kafka_sink(bootstrap: str, topic: str) -> KafkaSink:
    """An at-least-once Kafka sink of string records (readers are idempotent downstream).

    SASL and TLS settings come from the environment when the job is built
    (:func:`usp_feast.connections.kafka_java_properties`).
    """
    builder = (
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
    )
    for key, value in kafka_java_properties().items():
        builder = builder.set_property(key, value)
    return builder.build()


class ProcessBatch(MapFunction):
    """Validates, transforms and stores one batch of records; returns what goes to Kafka.

    A batch's store write overlaps the processing of the next batch (one write in flight). The
    batch the MicroBatcher sends before a checkpoint barrier is flagged, and this step waits for
    every write before returning it: the barrier that follows finds every row stored.
    """

    def __init__(self, config: SignalJobConfig, repo: Path, job: JobIdentity) -> None:
        self.config = config
        self.repo = repo
        self.job = job
        self.processor: Any = None
        self.sink: Any = None
        self.writer: Any = None
        self.metrics: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Load the contract and the transform, and connect to the store, once per task."""
        from usp_feast.contracts import Contract
        from usp_feast.definitions import load_definitions, load_transform, validation_dir
        from usp_feast.feast_sink import FeastSink, OverlappedWriter
        from usp_feast.pipeline import EventTimeBounds, SignalPipeline
        from usp_feast.processing import SignalProcessor
        from usp_feast.spec import SignalSpec

        spec = load_definitions(self.repo, check_imports=False).signal(self.config.signal)
        if not isinstance(spec, SignalSpec):
            raise ValueError(f"{spec.name} is a join signal; regenerate the streaming/ configs")
        contract = Contract.load(validation_dir(self.repo) / self.config.suite)
        # Live events older than the retention are refused (history is the backfill's).
        bounds = EventTimeBounds(max_age=spec.retention)
        pipeline = SignalPipeline(spec, load_transform(spec, self.repo), bounds)
        self.processor = SignalProcessor(pipeline, contract, self.config.max_event_bytes)
        self.sink = FeastSink(self.repo, self.config.signal, offline=True)
        self.writer = OverlappedWriter(self.sink.write)
        self.metrics = config_metrics(self.config, self.job)

    def close(self) -> None:
        """Finish the write in flight and write its offline rows."""
        if self.writer is not None:
            self.writer.close()
            self.sink.checkpoint()
        if self.metrics is not None:
            release_metrics(self.config, self.job)

    def map(self, value: Any) -> Row:
        """One MicroBatcher batch in; (signal JSON, event ms, dead letters) out for Kafka."""
        from usp_feast.processing import SourcePosition, event_time_ms, row_to_json

        topic = self.config.source_topic
        values, partitions, offsets, broker_ms, barrier_follows = value
        read_at = time.time()
        outcome = self.processor.process_batch(
            (
                bytes(values[i] or b""),
                SourcePosition(
                    topic, partitions[i], offsets[i], broker_ms[i] if broker_ms[i] >= 0 else None
                ),
            )
            for i in range(len(values))
        )
        event_ms = [event_time_ms(row) for row in outcome.rows]
        metrics, stored = self.metrics, len(outcome.rows)
        metrics.transformed(len(values), time.time() - read_at)
        metrics.batch_read(read_at, len(values), event_ms, broker_ms)
        metrics.dead_letters += len(outcome.dead_letters)
        self.writer.submit(outcome.rows, then=lambda: metrics.rows_stored(stored, read_at))
        if barrier_follows:
            self.writer.settle()
            self.sink.checkpoint()
        return Row(
            [row_to_json(row).decode() for row in outcome.rows],
            event_ms,
            [letter.to_json().decode() for letter in outcome.dead_letters],
        )


def release_metrics(config: AnyJobConfig, job: JobIdentity) -> None:
    """A task of ``config``'s pipeline closed (see :func:`usp_feast.job_metrics.release`)."""
    from usp_feast.job_metrics import release

    release(job, config.definition)


def config_metrics(config: AnyJobConfig, job: JobIdentity) -> Any:
    """``job``'s metrics of ``config``'s pipeline (:mod:`usp_feast.job_metrics`)."""
    from usp_feast.job_metrics import pipeline_metrics

    return pipeline_metrics(
        config.definition, config.kind, config.consumer_group, config.input_topics, job
    )
