"""Which jobs run here and how they are doing, from each job's own metrics endpoint.

A job's entry point registers it in ``<state dir>/jobs/<job>.<pid>.json`` (its metrics URLs
and pipelines; the pid keeps two runs of one job apart) and keeps
``<state dir>/jobs/targets.json`` current: a Prometheus file-based service discovery file
listing every running job's endpoints (its own, ``source="usp"``, and Flink's reporter,
``source="flink"``), which the generated ``monitoring/prometheus.yml`` scrapes.
``usp status`` and the API's ``/v1/jobs`` read the same registry and scrape the jobs' own
endpoints themselves: rates come from two samples, quantiles from the histogram buckets, the
way Prometheus' ``rate`` and ``histogram_quantile`` compute them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from usp_feast import metric_names as names

if TYPE_CHECKING:
    from rich.console import RenderableType

__all__ = [
    "JobHealth",
    "JobMonitor",
    "JobRecord",
    "MetricsSample",
    "PipelineHealth",
    "combine",
    "jobs_dir",
    "parse_metrics",
    "quantile",
    "register_job",
    "running_jobs",
    "status_view",
    "unregister_job",
]

LATENCIES = {
    "event": names.EVENT_LATENCY,
    "ingestion": names.INGESTION_LATENCY,
    "transform": names.TRANSFORM_LATENCY,
    "job": names.JOB_LATENCY,
}


@dataclass(frozen=True)
class JobRecord:
    """A running job as its entry point registered it."""

    job: str
    pid: int
    metrics_urls: tuple[str, ...]
    """Where the job's Python steps serve its metrics: the job's own process, or every
    TaskManager of the cluster it runs on (each serves the part of the job it runs)."""
    started_at: str
    pipelines: tuple[tuple[str, str], ...]  # (definition, kind)
    checkpoint_dir: str
    flink_metrics_urls: tuple[str, ...] = ()
    """Flink's own reporters (restarts, checkpoints, backpressure, Kafka source metrics): the
    job's mini-cluster, or the cluster's JobManager and TaskManagers."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """Read a record back from its JSON form."""
        return cls(
            job=data["job"],
            pid=int(data["pid"]),
            metrics_urls=tuple(data["metrics_urls"]),
            started_at=data["started_at"],
            pipelines=tuple((p, k) for p, k in data["pipelines"]),
            checkpoint_dir=data["checkpoint_dir"],
            flink_metrics_urls=tuple(data.get("flink_metrics_urls", ())),
        )


def jobs_dir(state_dir: Path | None = None) -> Path:
    """Where running jobs register (``<state dir>/jobs``)."""
    if state_dir is None:
        from usp_feast.devstack import state_dir as default_state_dir

        state_dir = default_state_dir()
    return state_dir / "jobs"


def register_job(record: JobRecord, state_dir: Path | None = None) -> Path:
    """Record a starting job and refresh the Prometheus targets file; returns the record file."""
    folder = jobs_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = _record_file(folder, record.job, record.pid)
    _write_atomic(path, json.dumps(asdict(record), indent=2))
    _write_targets(folder)
    return path


def unregister_job(job: str, pid: int, state_dir: Path | None = None) -> None:
    """Forget a job that stopped."""
    folder = jobs_dir(state_dir)
    with contextlib.suppress(FileNotFoundError):
        _record_file(folder, job, pid).unlink()
    if folder.is_dir():
        _write_targets(folder)


def running_jobs(state_dir: Path | None = None) -> list[JobRecord]:
    """Registered jobs whose process is alive, by name (records of dead ones are removed)."""
    folder = jobs_dir(state_dir)
    found, dead = [], False
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if path.name == _TARGETS:
            continue
        try:
            record = JobRecord.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if _alive(record.pid):
            found.append(record)
        else:
            # Killed without a chance to unregister (SIGKILL, a crash).
            path.unlink(missing_ok=True)
            dead = True
    if dead:
        _write_targets(folder)
    return found


_TARGETS = "targets.json"


def _record_file(folder: Path, job: str, pid: int) -> Path:
    return folder / f"{job}.{pid}.json"


def _write_targets(folder: Path) -> None:
    # One target per endpoint: a cluster's TaskManager serves every job placed on it, and
    # its samples carry their own `job` label (the generated config honours it).
    jobs_at: dict[tuple[str, str], list[str]] = {}
    for path in sorted(folder.glob("*.json")):
        if path.name == _TARGETS:
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = JobRecord.from_dict(json.loads(path.read_text()))
            urls = [("usp", url) for url in record.metrics_urls]
            urls += [("flink", url) for url in record.flink_metrics_urls]
            for source, url in urls:
                address = url.removeprefix("http://").split("/", 1)[0]
                jobs_at.setdefault((address, source), []).append(record.job)
    targets = [
        {"targets": [address], "labels": {"usp_job": "+".join(sorted(set(jobs))), "source": source}}
        for (address, source), jobs in jobs_at.items()
    ]
    _write_atomic(folder / _TARGETS, json.dumps(targets, indent=2))


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text + "\n")
    temporary.replace(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Buckets = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class MetricsSample:
    """One scrape of a job's endpoint, reduced to what health needs."""

    at: float
    counters: dict[tuple[str, str], float] = field(default_factory=dict)
    histograms: dict[tuple[str, str], Buckets] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    last_checkpoint: float | None = None


def parse_metrics(text: str, at: float, job: str | None = None) -> MetricsSample:
    """Read a job's Prometheus text (see :mod:`usp_feast.job_metrics`); only ``job``'s if given.

    Example:
        >>> s = parse_metrics('''
        ... usp_events_read_total{job="j",pipeline="search",kind="signal"} 12
        ... usp_consumer_lag{job="j",pipeline="search",kind="signal",topic="t"} 3
        ... usp_last_checkpoint_timestamp_seconds{job="j"} 1700000000
        ... ''', at=5.0)
        >>> s.counters, s.lag, s.kinds
        ({('usp_events_read_total', 'search'): 12.0}, {'search': 3.0}, {'search': 'signal'})
        >>> s.last_checkpoint
        1700000000.0
    """
    counters: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    lag: dict[str, float] = {}
    kinds: dict[str, str] = {}
    last_checkpoint = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if job is not None and sample.labels.get("job") != job:
                continue  # another job's pipeline in the same TaskManager
            pipeline = sample.labels.get("pipeline")
            if sample.name == names.LAST_CHECKPOINT:
                last_checkpoint = float(sample.value)
            elif pipeline is None:
                continue
            elif sample.name == names.CONSUMER_LAG:
                lag[pipeline] = lag.get(pipeline, 0.0) + float(sample.value)
            elif sample.name.endswith("_bucket"):
                key = (sample.name.removesuffix("_bucket"), pipeline)
                le = float(sample.labels["le"])
                buckets.setdefault(key, []).append((le, float(sample.value)))
            elif sample.name.endswith("_total"):
                counters[(sample.name, pipeline)] = float(sample.value)
            if pipeline is not None and "kind" in sample.labels:
                kinds[pipeline] = sample.labels["kind"]
    histograms = {key: tuple(sorted(values)) for key, values in buckets.items()}
    return MetricsSample(at, counters, histograms, lag, kinds, last_checkpoint)


def combine(samples: Sequence[MetricsSample]) -> MetricsSample:
    """One job's samples from several endpoints (its TaskManagers) as one sample.

    Counters and histogram buckets add up. Lag does not: each TaskManager asks the broker for
    the whole consumer group's lag, so the endpoints report the same figure (the largest is
    kept). The newest checkpoint and scrape time win.

    Example:
        >>> a = parse_metrics('usp_events_read_total{job="j",pipeline="p",kind="signal"} 2', 1.0)
        >>> b = parse_metrics('usp_events_read_total{job="j",pipeline="p",kind="signal"} 5', 2.0)
        >>> combine([a, b]).counters, combine([a, b]).at
        ({('usp_events_read_total', 'p'): 7.0}, 2.0)
    """
    if len(samples) == 1:
        return samples[0]
    counters: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    lag: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for sample in samples:
        for key, value in sample.counters.items():
            counters[key] = counters.get(key, 0.0) + value
        for key, histogram in sample.histograms.items():
            summed = buckets.setdefault(key, {})
            for le, count in histogram:
                summed[le] = summed.get(le, 0.0) + count
        for pipeline, records in sample.lag.items():
            lag[pipeline] = max(lag.get(pipeline, 0.0), records)
        kinds.update(sample.kinds)
    checkpoints = [s.last_checkpoint for s in samples if s.last_checkpoint is not None]
    return MetricsSample(
        max(s.at for s in samples),
        counters,
        {key: tuple(sorted(summed.items())) for key, summed in buckets.items()},
        lag,
        kinds,
        max(checkpoints, default=None),
    )


def quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile of cumulative ``(le, count)`` buckets, as ``histogram_quantile``.

    Linear within the bucket that holds it; a quantile in the ``+Inf`` bucket answers the
    highest finite bound. ``None`` when the buckets count nothing.

    Example:
        >>> quantile(0.5, ((0.1, 2.0), (1.0, 6.0), (math.inf, 6.0)))
        0.325
        >>> quantile(0.99, ((0.1, 0.0), (math.inf, 3.0)))
        0.1
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class PipelineHealth:
    """One definition's numbers within a job."""

    pipeline: str
    kind: str
    events_per_s: float | None
    dead_letters_per_s: float | None
    lag: int | None
    latency_ms: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class JobHealth:
    """A registered job: reachable or not, its pipelines, its last checkpoint."""

    job: str
    pid: int
    running: bool
    metrics_urls: tuple[str, ...]
    started_at: str | None
    last_checkpoint_age_s: float | None
    pipelines: tuple[PipelineHealth, ...]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``/v1/jobs`` and ``usp status --json`` show)."""
        return asdict(self)


def health(
    record: JobRecord, now: MetricsSample | None, before: MetricsSample | None, error: str | None
) -> JobHealth:
    """A job's health from its latest sample and the one before (rates need two).

    Latency quantiles cover what happened between the two samples when there are two (and
    something happened), else everything since the job started.
    """
    pipelines = []
    for pipeline, kind in record.pipelines:
        if now is None:
            pipelines.append(PipelineHealth(pipeline, kind, None, None, None, {}))
            continue
        latency: dict[str, dict[str, float | None]] = {}
        for label, metric in LATENCIES.items():
            buckets = now.histograms.get((metric, pipeline))
            if buckets is None:
                continue  # not measured for this kind
            recent = _delta_buckets(
                buckets, before.histograms.get((metric, pipeline)) if before else None
            )
            latency[label] = {f"p{round(q * 100)}": _ms(quantile(q, recent)) for q in (0.5, 0.99)}
        lag = now.lag.get(pipeline)
        pipelines.append(
            PipelineHealth(
                pipeline,
                now.kinds.get(pipeline, kind),
                _rate(now, before, names.EVENTS_READ, pipeline),
                _rate(now, before, names.DEAD_LETTERS, pipeline),
                None if lag is None else int(lag),
                latency,
            )
        )
    checkpoint_age = (
        max(0.0, time.time() - now.last_checkpoint)
        if now is not None and now.last_checkpoint is not None
        else None
    )
    return JobHealth(
        job=record.job,
        pid=record.pid,
        running=now is not None,
        metrics_urls=record.metrics_urls,
        started_at=record.started_at,
        last_checkpoint_age_s=checkpoint_age,
        pipelines=tuple(pipelines),
        error=error,
    )


def _delta_buckets(now: Buckets, before: Buckets | None) -> Buckets:
    if before is None or len(before) != len(now):
        return now
    delta = tuple((b, c - p) for (b, c), (_, p) in zip(now, before, strict=True))
    return delta if delta[-1][1] > 0 else now


def _rate(
    now: MetricsSample, before: MetricsSample | None, metric: str, pipeline: str
) -> float | None:
    if before is None or now.at <= before.at:
        return None
    current = now.counters.get((metric, pipeline))
    previous = before.counters.get((metric, pipeline))
    if current is None or previous is None:
        return None
    # A restarted job's counters start again from zero (Prometheus' counter reset rule).
    increase = current - previous if current >= previous else current
    return increase / (now.at - before.at)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


class JobMonitor:
    """Samples every running job; keeps the previous sample of each for rates."""

    def __init__(self, state_dir: Path | None = None, timeout: float = 2.0) -> None:
        self.state_dir = state_dir
        self.timeout = timeout
        self._previous: dict[str, MetricsSample] = {}

    def sample(self) -> list[JobHealth]:
        """Scrape every running job once; one :class:`JobHealth` per job."""
        found = []
        records = running_jobs(self.state_dir)
        for record in records:
            now, error = self._scrape(record)
            found.append(health(record, now, self._previous.get(record.job), error))
            if now is not None:
                self._previous[record.job] = now
        for job in set(self._previous) - {r.job for r in records}:
            del self._previous[job]
        return found

    def _scrape(self, record: JobRecord) -> tuple[MetricsSample | None, str | None]:
        parts, errors = [], []
        for url in record.metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    text = response.read().decode()
            except OSError as exc:
                # Not serving yet (Flink is still starting the job; a standby TaskManager
                # until a failover moves work onto it) or gone.
                errors.append(f"metrics endpoint {url} not answering: {exc}")
                continue
            parts.append(parse_metrics(text, time.monotonic(), record.job))
        if not parts:
            return None, "; ".join(errors) or "no metrics endpoint registered"
        return combine(parts), None


def status_view(jobs: Sequence[JobHealth]) -> RenderableType:
    """The jobs for a terminal (``usp status``, the demo): a table per job, a row per pipeline."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not jobs:
        return Text("usp jobs · none running (start one with `usp run`)")
    tables: list[RenderableType] = []
    for job in jobs:
        if not job.running:
            tables.append(Text(f"{job.job} (pid {job.pid}) · starting or unreachable", "yellow"))
            continue
        checkpoint = (
            "no checkpoint yet"
            if job.last_checkpoint_age_s is None
            else f"checkpoint {_duration(job.last_checkpoint_age_s * 1000)} ago"
        )
        table = Table(title=f"{job.job} (pid {job.pid}) · {checkpoint}", title_justify="left")
        table.add_column("pipeline", min_width=16)
        for column in ("ev/s", "DLQ/s", "lag", "event", "ingest", "transform", "job"):
            table.add_column(column, justify="right", no_wrap=True)
        for pipeline in job.pipelines:
            latency = [
                _quantiles(pipeline.latency_ms.get(label))
                for label in ("event", "ingestion", "transform", "job")
            ]
            table.add_row(
                f"{pipeline.pipeline} [dim]{pipeline.kind}[/]",
                _number(pipeline.events_per_s, ".1f"),
                _number(pipeline.dead_letters_per_s, ".1f"),
                _number(pipeline.lag, ","),
                *latency,
            )
        tables.append(table)
    legend = (
        "latencies p50/p99 · event: event time → read · ingest: broker append → read · "
        "transform: validate + transform · job: read → visible in the store"
    )
    return Group(*tables, Text(legend, "dim"))


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _quantiles(found: dict[str, float | None] | None) -> str:
    p50, p99 = (found or {}).get("p50"), (found or {}).get("p99")
    if p50 is None or p99 is None:
        return "-"
    return f"{_duration(p50)}/{_duration(p99)}"


def _duration(ms: float) -> str:
    """Milliseconds for a reader.

    Example:
        >>> [_duration(v) for v in (0.25, 38.2, 4_200, 420_000, 9_000_000)]
        ['0.2ms', '38ms', '4.2s', '7.0m', '2.5h']
    """
    if ms < 1:
        return f"{ms:.1f}ms"
    if ms < 1_000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1_000:.1f}s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f}m"
    return f"{ms / 3_600_000:.1f}h"


def started_now() -> str:
    """The current UTC time as a record's ``started_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def pipelines_of(configs: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    """``(definition, kind)`` of each job config (signal, join, segment, session)."""
    return tuple((c.definition, c.kind) for c in configs)
