"""The metric contract: every series a running job exports, with its type, labels and kinds.

This module is the single source of truth for the names: the jobs' exporter
(:mod:`usp_feast.job_metrics`) writes these series and the monitoring generator
(:mod:`usp_feast.monitoring`) writes rules and dashboards over them, nothing else. It is pure
(standard library only) so any process can import it cheaply.

Every series carries ``job``: the Flink job's name, its parts joined by ``+`` (see
:func:`job_name`). The per-pipeline series also carry ``pipeline`` (the definition's name) and
``kind`` (one of :data:`KINDS`); the consumer lag adds ``topic``.

Every job also serves Flink's own Prometheus reporter, a second endpoint. The few of its series
the generated monitoring queries are listed apart, in :data:`FLINK_METRICS` (the usp contract
above does not change with them): Flink exports each as a gauge, labelled ``job_id`` and
``job_name`` (the Flink job's name ``usp: <job>``, which the reporter writes with every character
outside ``[a-zA-Z0-9:_]`` as ``_``: ``usp:_search_view``), and per task ``task_name``,
``subtask_index`` and the like. Prometheus adds the target's labels, ``job`` (the usp job name)
and ``source="flink"``.

Example:
    >>> contract(JOB_LATENCY).type, contract(JOB_LATENCY).labels
    ('histogram', ('job', 'pipeline', 'kind'))
    >>> series_names(contract(DEAD_LETTERS)), series_names(contract(JOB_LATENCY))[0]
    (('usp_dead_letters_total',), 'usp_job_latency_seconds_bucket')
    >>> INGESTION_LATENCY in metrics_for_kind("segment")
    False
    >>> job_name([job_part("signal", "search"), job_part("join", "wishlist_enriched")])
    'search+join_wishlist_enriched'
    >>> FLINK_RESTARTS in flink_series(), flink_metric(FLINK_BACKPRESSURED_TIME).labels[-1]
    (True, 'subtask_index')

"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EVENTS_READ",
    "EVENT_LATENCY",
    "FLINK_BACKPRESSURED_TIME",
    "FLINK_BUSY_TIME",
    "FLINK_CHECKPOINT_COMPLETED_TIMESTAMP",
    "FLINK_CHECKPOINT_DURATION",
    "FLINK_CHECKPOINT_SIZE",
    "FLINK_COMPLETED_CHECKPOINTS",
    "FLINK_FAILED_CHECKPOINTS",
    "FLINK_JOB_LABELS",
    "FLINK_METRICS",
    "FLINK_RECORDS_IN",
    "FLINK_RESTARTS",
    "FLINK_TASK_LABELS",
    "FLINK_UPTIME",
    "HELP",
    "INGESTION_KINDS",
    "INGESTION_LATENCY",
    "JOB_LABELS",
    "JOB_LATENCY",
    "JOB_PART_SEPARATOR",
    "KINDS",
    "LAST_CHECKPOINT",
    "METRICS",
    "PIPELINE_LABELS",
    "ROWS_STORED",
    "TRANSFORM_LATENCY",
    "FlinkMetric",
    "Kind",
    "MetricContract",
    "contract",
    "flink_metric",
    "flink_series",
    "job_name",
    "job_part",
    "metrics_for_kind",
    "series_for_kind",
    "series_names",
]

Kind = Literal["signal", "join", "segment", "session"]
KINDS: tuple[Kind, ...] = ("signal", "join", "segment", "session")
INGESTION_KINDS: frozenset[str] = frozenset({"signal", "join"})
"""Kinds that read raw topics and so know the broker's append time of each record."""

PIPELINE_LABELS = ("job", "pipeline", "kind")
JOB_LABELS = ("job",)

EVENTS_READ = "usp_events_read_total"
ROWS_STORED = "usp_rows_stored_total"
DEAD_LETTERS = "usp_dead_letters_total"
EVENT_LATENCY = "usp_event_latency_seconds"
INGESTION_LATENCY = "usp_ingestion_latency_seconds"
TRANSFORM_LATENCY = "usp_transform_latency_seconds"
JOB_LATENCY = "usp_job_latency_seconds"
CONSUMER_LAG = "usp_consumer_lag"
LAST_CHECKPOINT = "usp_last_checkpoint_timestamp_seconds"

JOB_PART_SEPARATOR = "+"


@dataclass(frozen=True)
class MetricContract:
    """One exported metric: its name as exposed, type, help text, labels and kinds."""

    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]
    kinds: tuple[Kind, ...]
    """Kinds of pipeline that export it; job-level metrics (no ``pipeline`` label) list all."""


METRICS: tuple[MetricContract, ...] = (
    MetricContract(EVENTS_READ, "counter", "Input records read.", PIPELINE_LABELS, KINDS),
    MetricContract(
        ROWS_STORED,
        "counter",
        "Rows written to the store (visible to readers).",
        PIPELINE_LABELS,
        KINDS,
    ),
    MetricContract(
        DEAD_LETTERS,
        "counter",
        "Records sent to the dead-letter topic (signals, joins) or set aside on the late "
        "topic (segments, sessions).",
        PIPELINE_LABELS,
        KINDS,
    ),
    MetricContract(
        EVENT_LATENCY,
        "histogram",
        "Seconds from an event's own time to its read by the job.",
        PIPELINE_LABELS,
        KINDS,
    ),
    MetricContract(
        INGESTION_LATENCY,
        "histogram",
        "Seconds from the broker's append of a record to its read by the job.",
        PIPELINE_LABELS,
        ("signal", "join"),
    ),
    MetricContract(
        TRANSFORM_LATENCY,
        "histogram",
        "Seconds an event spends in validation and transform (or the keyed step).",
        PIPELINE_LABELS,
        KINDS,
    ),
    MetricContract(
        JOB_LATENCY,
        "histogram",
        "Seconds from an event's read by the job to its row being visible in the store.",
        PIPELINE_LABELS,
        KINDS,
    ),
    MetricContract(
        CONSUMER_LAG,
        "gauge",
        "Records between the consumer group's committed offsets and the log end, summed "
        "over partitions.",
        (*PIPELINE_LABELS, "topic"),
        KINDS,
    ),
    MetricContract(
        LAST_CHECKPOINT,
        "gauge",
        "Unix time of the job's newest completed checkpoint.",
        JOB_LABELS,
        KINDS,
    ),
)

HELP: dict[str, str] = {metric.name: metric.help for metric in METRICS}
"""Metric name → help text."""

_BY_NAME = {metric.name: metric for metric in METRICS}


def contract(name: str) -> MetricContract:
    """The contract of the metric called ``name``.

    Raises:
        KeyError: When ``name`` is not in the contract.

    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the metric contract (usp_feast.metric_names)") from None


def series_names(metric: MetricContract) -> tuple[str, ...]:
    """The sample names a metric is exposed as (a histogram: ``_bucket``, ``_sum``, ``_count``)."""
    if metric.type == "histogram":
        return tuple(f"{metric.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return (metric.name,)


def metrics_for_kind(kind: str) -> tuple[str, ...]:
    """Names of the metrics a pipeline of ``kind`` exports (job-level ones included)."""
    return tuple(metric.name for metric in METRICS if kind in metric.kinds)


def series_for_kind(kind: str) -> frozenset[str]:
    """Every sample name a pipeline of ``kind`` may be queried by."""
    return frozenset(
        series for metric in METRICS if kind in metric.kinds for series in series_names(metric)
    )


def job_part(kind: str, name: str) -> str:
    """A definition's part of the ``job`` label: its job config's name (``join_<name>``, ...).

    Signals go by their name; other kinds carry a prefix that signal names may not start with,
    so parts of different kinds never clash.
    """
    return name if kind == "signal" else f"{kind}_{name}"


def job_name(parts: Iterable[str]) -> str:
    """The ``job`` label of a Flink job running these definitions' parts, in the job's order."""
    return JOB_PART_SEPARATOR.join(parts)


# --- Flink's own reporter ---------------------------------------------------------------------
# Not the usp contract: Flink names these (org.apache.flink.metrics.prometheus), and a new Flink
# version may rename them; they are listed here so the generator and its tests share one list.

FLINK_JOB_LABELS = ("job_id", "host", "job_name")
FLINK_TASK_LABELS = (
    "job_id",
    "task_id",
    "task_attempt_id",
    "host",
    "task_name",
    "task_attempt_num",
    "job_name",
    "tm_id",
    "subtask_index",
)

FLINK_RESTARTS = "flink_jobmanager_job_numRestarts"
FLINK_FAILED_CHECKPOINTS = "flink_jobmanager_job_numberOfFailedCheckpoints"
FLINK_COMPLETED_CHECKPOINTS = "flink_jobmanager_job_numberOfCompletedCheckpoints"
FLINK_CHECKPOINT_DURATION = "flink_jobmanager_job_lastCheckpointDuration"
FLINK_CHECKPOINT_SIZE = "flink_jobmanager_job_lastCheckpointSize"
FLINK_CHECKPOINT_COMPLETED_TIMESTAMP = "flink_jobmanager_job_lastCheckpointCompletedTimestamp"
FLINK_UPTIME = "flink_jobmanager_job_uptime"
FLINK_BACKPRESSURED_TIME = "flink_taskmanager_job_task_backPressuredTimeMsPerSecond"
FLINK_BUSY_TIME = "flink_taskmanager_job_task_busyTimeMsPerSecond"
FLINK_RECORDS_IN = "flink_taskmanager_job_task_numRecordsInPerSecond"


@dataclass(frozen=True)
class FlinkMetric:
    """One series of Flink's own Prometheus reporter that the generated monitoring queries."""

    name: str
    help: str
    labels: tuple[str, ...]
    """Labels as the reporter exposes them (Prometheus adds ``job``, ``instance``, ``source``)."""
    type: Literal["gauge"] = "gauge"
    """The reporter exposes Flink's counters as gauges too (``numRestarts`` only grows)."""
    source: Literal["flink"] = "flink"
    """The ``source`` label of the endpoint that serves it."""


FLINK_METRICS: tuple[FlinkMetric, ...] = (
    FlinkMetric(
        FLINK_RESTARTS,
        "Times the job restarted after a failure since it was submitted; only grows.",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_FAILED_CHECKPOINTS,
        "Checkpoints that failed (or could not be triggered) since the job was submitted.",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_COMPLETED_CHECKPOINTS,
        "Checkpoints completed since the job was submitted.",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_CHECKPOINT_DURATION,
        "Milliseconds the newest completed checkpoint took.",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_CHECKPOINT_SIZE,
        "Bytes of state the newest completed checkpoint wrote (its increment when incremental).",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_CHECKPOINT_COMPLETED_TIMESTAMP,
        "Unix time in milliseconds at which the newest checkpoint completed.",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_UPTIME,
        "Milliseconds the job has been running (-1 once it has finished).",
        FLINK_JOB_LABELS,
    ),
    FlinkMetric(
        FLINK_BACKPRESSURED_TIME,
        "Milliseconds per second a subtask waited for its output to be taken (0 to 1000).",
        FLINK_TASK_LABELS,
    ),
    FlinkMetric(
        FLINK_BUSY_TIME,
        "Milliseconds per second a subtask was busy processing (0 to 1000).",
        FLINK_TASK_LABELS,
    ),
    FlinkMetric(
        FLINK_RECORDS_IN,
        "Records a subtask read per second (averaged over a minute).",
        FLINK_TASK_LABELS,
    ),
)

_FLINK_BY_NAME = {metric.name: metric for metric in FLINK_METRICS}


def flink_metric(name: str) -> FlinkMetric:
    """The entry of Flink's series called ``name``.

    Raises:
        KeyError: When ``name`` is not in :data:`FLINK_METRICS`.

    """
    try:
        return _FLINK_BY_NAME[name]
    except KeyError:
        raise KeyError(
            f"{name!r} is not among the Flink series monitoring uses "
            "(usp_feast.metric_names.FLINK_METRICS)"
        ) from None


def flink_series() -> frozenset[str]:
    """Every sample name of Flink's reporter the generated monitoring may query."""
    return frozenset(metric.name for metric in FLINK_METRICS)
