"""The metrics a running job exports: Prometheus text over HTTP, from inside the job.

In thread mode every Python operator runs in one interpreter embedded in the JVM (one per
TaskManager process), so a module-level registry sees every pipeline running there and one
HTTP endpoint serves them all. Where it listens comes from the ``USP_JOB_METRICS`` environment
variable, which the JVM and so the embedded interpreter inherit: ``{"port": int, "host": ...}``
(a local job's entry point sets it for its mini-cluster; ``usp cluster up`` sets it for each
TaskManager). Without it the metrics are kept but not served. Which job a pipeline belongs to,
its Kafka and its checkpoints travel with the job's operators (:class:`JobIdentity`): a
cluster's TaskManager may run pipelines of several jobs.

What is measured, per pipeline (names in :mod:`usp_feast.metric_names`):

* event latency: the event's own time → read by the job's Python step;
* ingestion latency: the broker's append time → read (signals and joins, which read raw
  topics; segments and sessions read signal topics whose record time is the event time);
* transform latency: validation + transform (or the keyed step) per event;
* job latency: read → written to the store, visible to readers;
* events read, rows stored, dead letters, and consumer lag (committed offsets → log end, the
  way Kafka lag exporters compute it), refreshed from the broker every few seconds in the
  background so that a scrape never waits on it.

Histograms count per batch with numpy (one ``searchsorted`` per batch), so a batch of
thousands of events costs microseconds, not one Python call per event.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from usp_feast import metric_names as names

__all__ = [
    "ENV",
    "LATENCY_BUCKETS",
    "JobIdentity",
    "JobMetrics",
    "LagRefresher",
    "LatencyHistogram",
    "PipelineMetrics",
    "latest_checkpoint",
    "pipeline_metrics",
    "release",
]

logger = logging.getLogger(__name__)

ENV = "USP_JOB_METRICS"
# Seconds. From milliseconds (a transform step) to an hour (late events show up as such).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip


class LatencyHistogram:
    """Prometheus histogram counts, filled a batch at a time.

    Example:
        >>> h = LatencyHistogram((0.1, 1.0))
        >>> h.observe_many([0.05, 0.1, 0.5, 7.0])
        >>> h.observe(0.2, count=2)
        >>> h.cumulative(), round(h.total, 2), h.count
        ([(0.1, 2), (1.0, 5), (inf, 6)], 8.05, 6)
    """

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds = tuple(float(b) for b in bounds)  # bisect is quicker for one value
        self.counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self.total = 0.0
        self.count = 0

    def observe_many(self, seconds: Sequence[float] | np.ndarray) -> None:
        """Count each value in its bucket (``le``: a value equal to a bound is in it)."""
        values = np.asarray(seconds, dtype=np.float64)
        if values.size == 0:
            return
        slots = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(slots, minlength=len(self.counts))
        self.total += float(values.sum())
        self.count += int(values.size)

    def observe(self, seconds: float, count: int = 1) -> None:
        """Count ``count`` events that each took ``seconds`` (a batch's per-event average)."""
        if count <= 0:
            return
        self.counts[bisect.bisect_left(self._bounds, seconds)] += count
        self.total += seconds * count
        self.count += count

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, events at or below it)`` per bucket, ending with ``+Inf``."""
        running = np.cumsum(self.counts)
        return [
            (float(b), int(c)) for b, c in zip([*self.bounds, float("inf")], running, strict=True)
        ]


@dataclass
class PipelineMetrics:
    """One definition's measurements within the job (see the module docstring)."""

    pipeline: str
    kind: str
    consumer_group: str
    topics: tuple[str, ...]
    read: int = 0
    stored: int = 0
    dead_letters: int = 0
    event_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ingestion_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    transform_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    job_latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def batch_read(
        self,
        read_at: float,
        count: int,
        event_ms: Sequence[int],
        broker_ms: Sequence[int] = (),
    ) -> None:
        """``count`` records read at ``read_at`` (Unix s); the event and broker times known.

        Broker times below 0 (unknown to the broker) are left out.
        """
        self.read += count
        if len(event_ms):
            self.event_latency.observe_many(read_at - np.asarray(event_ms) / 1000.0)
        if len(broker_ms):
            appended = np.asarray(broker_ms)
            self.ingestion_latency.observe_many(read_at - appended[appended >= 0] / 1000.0)

    def read_one(self, read_at: float, event_ms: int) -> None:
        """One record read at ``read_at`` (Unix s), of event time ``event_ms``."""
        self.read += 1
        self.event_latency.observe(read_at - event_ms / 1000.0)

    def transformed(self, count: int, seconds: float) -> None:
        """``count`` events validated and transformed in ``seconds`` together."""
        if count:
            self.transform_latency.observe(seconds / count, count)

    def rows_stored(self, count: int, read_at: float, written_at: float | None = None) -> None:
        """``count`` rows read at ``read_at`` became visible (now, unless ``written_at``)."""
        self.stored += count
        self.job_latency.observe((written_at or time.time()) - read_at, count)

    def rows_stored_at(self, read_ms: Sequence[float], written_at: float | None = None) -> None:
        """Rows became visible (now, unless ``written_at``), each read at its ``read_ms``."""
        self.stored += len(read_ms)
        if len(read_ms):
            written = written_at or time.time()
            self.job_latency.observe_many(written - np.asarray(read_ms) / 1000.0)

    def families(self, job: str) -> Iterator[Metric]:
        """The pipeline's counters and histograms as Prometheus metric families."""
        labels = {"job": job, "pipeline": self.pipeline, "kind": self.kind}
        for name, value in (
            (names.EVENTS_READ, self.read),
            (names.ROWS_STORED, self.stored),
            (names.DEAD_LETTERS, self.dead_letters),
        ):
            family = CounterMetricFamily(
                name.removesuffix("_total"), names.HELP[name], labels=list(labels)
            )
            family.add_metric(list(labels.values()), value)
            yield family
        histograms = {
            names.EVENT_LATENCY: self.event_latency,
            names.TRANSFORM_LATENCY: self.transform_latency,
            names.JOB_LATENCY: self.job_latency,
        }
        if self.kind in names.INGESTION_KINDS:
            histograms[names.INGESTION_LATENCY] = self.ingestion_latency
        for name, histogram in histograms.items():
            buckets = HistogramMetricFamily(name, names.HELP[name], labels=list(labels))
            buckets.add_metric(
                list(labels.values()),
                [(_le(b), float(c)) for b, c in histogram.cumulative()],
                histogram.total,
            )
            yield buckets


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) under ``folder``."""
    if not folder.is_dir():
        return None
    done = [m.parent for m in folder.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime, default=None)


@dataclass(frozen=True)
class JobIdentity:
    """Which job a pipeline belongs to, and where its lag and checkpoints are read.

    The job's operators carry it (built from ``flink.JobRuntime``), so every task knows its own
    job wherever it runs. PyFlink does not hand Flink's global job parameters to Python steps
    in thread mode: ``RuntimeContext.get_job_parameter`` sees only its own two keys.
    """

    job: str
    bootstrap: str | None = None
    checkpoints: Path | None = None


class JobMetrics(Collector):
    """One job's pipelines in this interpreter, assembled at scrape time."""

    def __init__(self, identity: JobIdentity) -> None:
        self.job = identity.job
        self.checkpoints = identity.checkpoints
        self.pipelines: dict[str, PipelineMetrics] = {}
        self.tasks: dict[str, int] = {}  # pipeline → its tasks open in this interpreter
        bootstrap = identity.bootstrap
        self._lag = LagRefresher(_LagReader(bootstrap), self.pipelines) if bootstrap else None

    def close(self) -> None:
        """Stop asking the broker for lag."""
        if self._lag is not None:
            self._lag.stop()

    def collect(self) -> Iterable[Metric]:
        """The job's families, one per metric name."""
        return _one_family_per_name(self._families())

    def _families(self) -> Iterator[Metric]:
        for metrics in list(self.pipelines.values()):
            yield from metrics.families(self.job)
        if self._lag is not None:
            lag = GaugeMetricFamily(
                names.CONSUMER_LAG,
                names.HELP[names.CONSUMER_LAG],
                labels=["job", "pipeline", "kind", "topic"],
            )
            for (pipeline, topic), records in sorted(self._lag.current().items()):
                kind = self.pipelines[pipeline].kind
                lag.add_metric([self.job, pipeline, kind, topic], records)
            yield lag
        newest = latest_checkpoint(self.checkpoints) if self.checkpoints else None
        if newest is not None:
            gauge = GaugeMetricFamily(
                names.LAST_CHECKPOINT, names.HELP[names.LAST_CHECKPOINT], labels=["job"]
            )
            gauge.add_metric([self.job], (newest / "_metadata").stat().st_mtime)
            yield gauge


class _Interpreter(Collector):
    """Every job with pipelines in this interpreter (a TaskManager may run several)."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobMetrics] = {}

    def collect(self) -> Iterable[Metric]:
        """Every job's families, one per metric name."""
        return _one_family_per_name(
            family for job in list(self.jobs.values()) for family in job.collect()
        )


def _one_family_per_name(families: Iterable[Metric]) -> list[Metric]:
    # The text format allows one HELP/TYPE block per name: pipelines and jobs share them.
    merged: dict[str, Metric] = {}
    for family in families:
        if family.name in merged:
            merged[family.name].samples.extend(family.samples)
        else:
            merged[family.name] = family
    return list(merged.values())


class LagRefresher:
    """Keeps each pipeline's consumer lag current in the background.

    A scrape then never waits on the broker: with the broker down, asking it at scrape time
    would hold a scrape past Prometheus' timeout and report a live job as down. Values older
    than ``stale_after`` seconds are left out (the lag is unknown, not zero).

    Example:
        >>> class Broker:
        ...     def lag(self, group, topics):
        ...         return [(t, 7) for t in topics]
        >>> now = [0.0]
        >>> pipelines = {"search": PipelineMetrics("search", "signal", "g", ("events.search",))}
        >>> refresher = LagRefresher(Broker(), pipelines, start=False, clock=lambda: now[0])
        >>> refresher.refresh(); refresher.current()
        {('search', 'events.search'): 7}
        >>> now[0] = 61.0; refresher.current()
        {}
    """

    def __init__(
        self,
        reader: Any,
        pipelines: dict[str, PipelineMetrics],
        *,
        interval: float = 5.0,
        stale_after: float = 60.0,
        start: bool = True,
        clock: Any = time.monotonic,
    ) -> None:
        self.reader = reader
        self.pipelines = pipelines
        self.interval = interval
        self.stale_after = stale_after
        self.clock = clock
        self._values: dict[tuple[str, str], tuple[int, float]] = {}
        self._stopped = threading.Event()
        if start:
            threading.Thread(target=self._run, name="usp-consumer-lag", daemon=True).start()

    def refresh(self) -> None:
        """Ask the broker once for every pipeline's lag."""
        for metrics in list(self.pipelines.values()):
            for topic, records in self.reader.lag(metrics.consumer_group, metrics.topics):
                self._values[(metrics.pipeline, topic)] = (records, self.clock())

    def current(self) -> dict[tuple[str, str], int]:
        """``(pipeline, topic)`` → records behind, for values fresher than ``stale_after``."""
        now = self.clock()
        return {
            key: records
            for key, (records, at) in list(self._values.items())
            if now - at <= self.stale_after
        }

    def stop(self) -> None:
        """End the background refresh (its thread closes the reader's connections)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.refresh()
            except Exception:  # never let the refresher die: the next round may succeed
                logger.exception("consumer lag refresh failed")
            self._stopped.wait(self.interval)
        self.reader.close()


class _LagReader:
    """Per topic: records between a group's committed offsets and the log end."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumers: dict[str, Any] = {}

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()

    def lag(self, group: str, topics: Sequence[str]) -> Iterator[tuple[str, int]]:
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        from usp_feast.connections import kafka_config

        consumer = self._consumers.get(group)
        if consumer is None:
            # Never subscribes, so it never joins the group: it only reads the offsets.
            consumer = Consumer(
                kafka_config(self.bootstrap, {"group.id": group, "enable.auto.commit": False})
            )
            self._consumers[group] = consumer
        for topic in topics:
            try:
                meta = consumer.list_topics(topic, timeout=2).topics.get(topic)
                if meta is None or meta.error is not None:
                    continue
                partitions = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
                committed = consumer.committed(partitions, timeout=2)
                total = 0
                for tp in committed:
                    low, high = consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                    # No commit yet (a first start): everything retained is still to read.
                    total += max(0, high - (tp.offset if tp.offset >= 0 else low))
            except KafkaException as exc:
                logger.warning("consumer lag of %s on %s unavailable: %s", group, topic, exc)
                continue
            yield topic, total


_lock = threading.Lock()
_interpreter: _Interpreter | None = None


def pipeline_metrics(
    pipeline: str, kind: str, consumer_group: str, topics: Sequence[str], job: JobIdentity
) -> PipelineMetrics:
    """``job``'s metrics of ``pipeline``, registered once (the first call starts the exporter).

    Operators of one pipeline (a join's two sides and its writer) share the same object.
    """
    global _interpreter
    with _lock:
        if _interpreter is None:
            _interpreter = _start_exporter()
        metrics_of_job = _interpreter.jobs.get(job.job)
        if metrics_of_job is None:
            metrics_of_job = _interpreter.jobs[job.job] = JobMetrics(job)
        metrics = metrics_of_job.pipelines.get(pipeline)
        if metrics is None:
            metrics = PipelineMetrics(pipeline, kind, consumer_group, tuple(topics))
            metrics_of_job.pipelines[pipeline] = metrics
        metrics_of_job.tasks[pipeline] = metrics_of_job.tasks.get(pipeline, 0) + 1
        return metrics


def release(job: JobIdentity, pipeline: str) -> None:
    """A task of ``pipeline`` closed; its series go once the pipeline's last task here has.

    A TaskManager's interpreter outlives its jobs: a cancelled job's series would otherwise
    stay on its endpoint, frozen, and its lag thread keep asking the broker.
    """
    with _lock:
        jobs = _interpreter.jobs if _interpreter else {}
        metrics_of_job = jobs.get(job.job)
        if metrics_of_job is None or pipeline not in metrics_of_job.tasks:
            return
        metrics_of_job.tasks[pipeline] -= 1
        if metrics_of_job.tasks[pipeline] > 0:
            return
        del metrics_of_job.tasks[pipeline], metrics_of_job.pipelines[pipeline]
        if not metrics_of_job.pipelines:
            metrics_of_job.close()
            del jobs[job.job]


def _start_exporter() -> _Interpreter:
    interpreter = _Interpreter()
    settings = json.loads(os.environ.get(ENV) or "{}")
    port = settings.get("port")
    if port is None:
        logger.warning("%s is not set: job metrics are kept but not served", ENV)
        return interpreter
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(interpreter)
    try:
        start_http_server(int(port), addr=settings.get("host", "127.0.0.1"), registry=registry)
    except OSError as exc:
        logger.warning("job metrics not served: port %s: %s", port, exc)
    return interpreter
