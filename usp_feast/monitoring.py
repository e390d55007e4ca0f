"""Monitoring generated from definitions: Prometheus rules, Grafana dashboards, a Prometheus config.

``usp generate`` writes, beside the repository in ``monitoring/``:

* ``prometheus/<name>.rules.yml``: per definition, recording rules and alerts;
* ``grafana/<name>.json``: per definition, an importable Grafana dashboard;
* ``prometheus/flink.rules.yml`` and ``grafana/flink.json``: once per repository, alerts and a
  dashboard over Flink's own reporter (restarts, checkpoints, backpressure) of every job;
* ``prometheus.yml``: a Prometheus config that loads the rule files and finds the running jobs
  (both endpoints of each) through file-based service discovery (:data:`TARGETS_FILE`, which
  the jobs maintain);
* ``README.md``: how to use them.

Join signals, segments and session engagements are named by their definition's name too; only
when a segment shares its name with a signal do its files get a ``segment_`` prefix, and a
definition named ``flink`` gets its kind as prefix (``signal_flink``), as ``flink.*`` are the
Flink files.

Every query uses only the series of :mod:`usp_feast.metric_names` (the usp contract, and the
Flink series of :data:`~usp_feast.metric_names.FLINK_METRICS` in the Flink files) and
Prometheus' own ``up``.
Rendering is pure and deterministic; :mod:`usp_feast.monitoring_checks` checks what was
rendered (the way promtool would, and which metrics each file queries).

Example:
    >>> from pathlib import Path
    >>> from usp_feast.spec import SignalSpec
    >>> spec = SignalSpec(
    ...     name="search", owner="search-team", source={"topic": "events.search"},
    ...     fields={"query": "string"}, transform="transforms.SearchTransform",
    ...     retention="30d", validation="search")
    >>> files = render_monitoring(Definitions(repo=Path("."), signals=(spec,)))
    >>> sorted(files)  # doctest: +NORMALIZE_WHITESPACE
    ['README.md', 'grafana/flink.json', 'grafana/search.json', 'prometheus.yml',
     'prometheus/flink.rules.yml', 'prometheus/search.rules.yml']
    >>> from usp_feast.monitoring_checks import check_rules
    >>> check_rules(files["prometheus/search.rules.yml"])
    []

"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from usp_feast import metric_names as m
from usp_feast.definitions import Definitions
from usp_feast.durations import format_duration
from usp_feast.spec import JoinSignalSpec

if TYPE_CHECKING:
    pass

__all__ = [
    "DATASOURCE",
    "DEFAULT_THRESHOLDS",
    "FLINK_STEM",
    "TARGETS_FILE",
    "AlertThresholds",
    "MonitoringError",
    "Pipeline",
    "by_folder",
    "pipelines",
    "render_monitoring",
]

TARGETS_FILE = ".usp/jobs/targets.json"
"""The running jobs' scrape targets (Prometheus ``file_sd`` JSON), relative to the project root.

Each entry is ``{"targets": ["127.0.0.1:PORT"], "labels": {"usp_job": "<job>", "source": S}}``
(written by :mod:`usp_feast.job_status`), two per job: its own endpoint (``S`` is ``usp``) and
Flink's reporter (``flink``). The generated ``prometheus.yml`` makes ``usp_job`` the target's
``job`` label, so ``up`` and Flink's series name the job the way the job's own series do.
"""

FLINK_STEM = "flink"
"""File stem of the Flink files (``prometheus/flink.rules.yml``, ``grafana/flink.json``)."""


class MonitoringError(ValueError):
    """Monitoring files cannot be generated; the message says which definitions and why."""


@dataclass(frozen=True)
class AlertThresholds:
    """When the generated alerts fire: the one place their defaults live (docs/monitoring.md).

    Every duration is a ``timedelta``; in the rules it is written the way Prometheus reads it.
    """

    rate_window: timedelta = timedelta(minutes=5)
    """Window of every ``rate()`` in recording rules and alerts."""
    job_latency_p99_seconds: float = 1.0
    """p99 of job latency (read → visible in the store) above this ..."""
    job_latency_for: timedelta = timedelta(minutes=5)
    """... for this long fires ``UspJobLatencyHigh``."""
    dead_letter_ratio: float = 0.05
    """Dead letters (or late events set aside) per event read above this ..."""
    dead_letter_for: timedelta = timedelta(minutes=10)
    """... for this long fires ``UspDeadLetterRatioHigh``."""
    consumer_lag_records: int = 10_000
    """Consumer lag, summed over a pipeline's topics, above this ..."""
    consumer_lag_for: timedelta = timedelta(minutes=10)
    """... for this long fires ``UspConsumerLagHigh``; lag rising (over this window, above
    :attr:`consumer_lag_growing_min_records`) for this long fires ``UspConsumerLagGrowing``."""
    consumer_lag_growing_min_records: int = 1_000
    """Below this lag a rise is noise, not a job falling behind."""
    stalled_window: timedelta = timedelta(minutes=15)
    """No event read in this window while the lag is above zero ..."""
    stalled_for: timedelta = timedelta(minutes=1)
    """... for this long fires ``UspPipelineStalled``."""
    checkpoint_age: timedelta = timedelta(minutes=10)
    """The job's newest completed checkpoint older than this ..."""
    checkpoint_for: timedelta = timedelta(minutes=1)
    """... for this long fires ``UspCheckpointStale``."""
    target_down_for: timedelta = timedelta(minutes=1)
    """The job's metrics endpoint unreachable (``up == 0``) this long fires ``UspJobDown``."""

    # Flink's own reporter, in prometheus/flink.rules.yml (one file for every job).
    flink_restart_window: timedelta = timedelta(minutes=10)
    """Flink's restart count rising within this window fires ``UspFlinkJobRestarting`` at once."""
    flink_failed_checkpoint_window: timedelta = timedelta(minutes=10)
    """A checkpoint failing within this window fires ``UspFlinkCheckpointsFailing`` at once ..."""
    flink_startup_grace: timedelta = timedelta(minutes=2)
    """... unless it failed in the job's first this long: Flink counts the checkpoints it
    cannot trigger while the job's tasks start as failed (5 to 18 per start of the jobs here)."""
    flink_checkpoint_duration: timedelta = timedelta(seconds=60)
    """The newest checkpoint taking longer than this ..."""
    flink_checkpoint_duration_for: timedelta = timedelta(minutes=10)
    """... for this long fires ``UspFlinkCheckpointSlow``."""
    flink_backpressure_ms_per_second: float = 500
    """A task back-pressured more than this many milliseconds per second ..."""
    flink_backpressure_for: timedelta = timedelta(minutes=10)
    """... for this long fires ``UspFlinkBackpressure``."""


DEFAULT_THRESHOLDS = AlertThresholds()


@dataclass(frozen=True)
class Pipeline:
    """One definition as monitoring sees it: its ``pipeline``/``kind`` labels and file stem."""

    name: str
    kind: m.Kind
    stem: str
    """File name of its rules (``<stem>.rules.yml``) and dashboard (``<stem>.json``): its name,
    unless that is taken (see :func:`pipelines`)."""

    @property
    def selector(self) -> str:
        """The label matchers of the pipeline's own series."""
        return f'{{pipeline="{self.name}",kind="{self.kind}"}}'

    @property
    def job_selector(self) -> str:
        """Label matchers of the job-level series (``up``, checkpoints) of every job running it.

        A job's ``job`` label joins its parts with ``+``; this pipeline is one of them.
        """
        part = re.escape(m.job_part(self.kind, self.name)).replace("\\", "\\\\")
        sep = "\\\\" + m.JOB_PART_SEPARATOR
        return f'{{job=~"(.+{sep})?{part}({sep}.+)?"}}'

    @property
    def latencies(self) -> tuple[str, ...]:
        """The latency histograms it exports."""
        names = (m.EVENT_LATENCY, m.INGESTION_LATENCY, m.TRANSFORM_LATENCY, m.JOB_LATENCY)
        return tuple(name for name in names if self.kind in m.contract(name).kinds)

    @property
    def dead_letters(self) -> str:
        """What its dead letters are, in words."""
        if self.kind in ("signal", "join"):
            return "dead letters"
        return "late events set aside"


def pipelines(definitions: Definitions) -> list[Pipeline]:
    """Every definition with its monitoring names, in file order (signals first, then by name).

    A definition's files are named after it, except a segment named like a signal (its view's
    name, ``segment_<name>``) and a definition named :data:`FLINK_STEM` (``<kind>_flink``).

    Raises:
        MonitoringError: When two definitions would write the same file.

    """
    found: list[Pipeline] = []
    signal_names = {s.name for s in definitions.signals}
    for spec in sorted(definitions.signals, key=lambda s: s.name):
        kind: m.Kind = "join" if isinstance(spec, JoinSignalSpec) else "signal"
        found.append(Pipeline(spec.name, kind, spec.name))
    for segment in sorted(definitions.segments, key=lambda s: s.name):
        # Segment and signal names may coincide (their Feast views differ); files may not.
        stem = segment.view if segment.name in signal_names else segment.name
        found.append(Pipeline(segment.name, "segment", stem))
    for session in sorted(definitions.sessions, key=lambda s: s.name):
        found.append(Pipeline(session.name, "session", session.name))
    # flink.* are the Flink files; a definition of that name steps aside the way a segment
    # named like a signal does, with its kind as prefix (a segment's is its view's name).
    found = [
        dataclasses.replace(p, stem=f"{p.kind}_{p.name}") if p.stem == FLINK_STEM else p
        for p in found
    ]
    seen: dict[str, Pipeline] = {}
    for pipeline in found:
        other = seen.setdefault(pipeline.stem, pipeline)
        if other is not pipeline:
            raise MonitoringError(
                f"{other.kind} {other.name!r} and {pipeline.kind} {pipeline.name!r} would both "
                f"write monitoring/prometheus/{pipeline.stem}.rules.yml; rename one of them"
            )
    return found


def render_monitoring(
    definitions: Definitions, thresholds: AlertThresholds = DEFAULT_THRESHOLDS
) -> dict[str, str]:
    """Path in ``monitoring/`` (POSIX, relative) → text of every file (deterministic bytes).

    Raises:
        MonitoringError: When two definitions would write the same file.

    """
    found = pipelines(definitions)
    files: dict[str, str] = {}
    for pipeline in found:
        files[f"prometheus/{pipeline.stem}.rules.yml"] = _rules_file(pipeline, thresholds)
    for pipeline in found:
        files[f"grafana/{pipeline.stem}.json"] = _dashboard_file(pipeline, thresholds)
    files[f"prometheus/{FLINK_STEM}.rules.yml"] = _flink_rules_file(thresholds)
    files[f"grafana/{FLINK_STEM}.json"] = _flink_dashboard_file(thresholds)
    files["prometheus.yml"] = _prometheus_config(found)
    files["README.md"] = _readme(found, thresholds)
    return dict(sorted(files.items()))


def by_folder(rendered: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Rendered files grouped by sub-folder (``""`` for the top): folder → file name → text."""
    grouped: dict[str, dict[str, str]] = {}
    for path, text in rendered.items():
        parts = PurePosixPath(path)
        folder = "" if str(parts.parent) == "." else str(parts.parent)
        grouped.setdefault(folder, {})[parts.name] = text
    return grouped


# --- Prometheus rules -------------------------------------------------------------------------


def _duration(value: timedelta) -> str:
    return format_duration(value)


def _number(value: float) -> str:
    return f"{value:g}"


def _rate(metric: str, pipeline: Pipeline, window: str) -> str:
    return f"rate({metric}{pipeline.selector}[{window}])"


def _quantile(q: float, histogram: str, pipeline: Pipeline, window: str, by: str) -> str:
    rate = _rate(f"{histogram}_bucket", pipeline, window)
    return f"histogram_quantile({q:g}, sum by ({by}) ({rate}))"


def _short(histogram: str) -> str:
    """``usp_job_latency_seconds`` → ``job latency``."""
    return histogram.removeprefix("usp_").removesuffix("_seconds").replace("_", " ")


def _recording_rules(p: Pipeline, t: AlertThresholds) -> list[dict[str, Any]]:
    window = _duration(t.rate_window)
    suffix = f"rate{window}"
    by = "sum by (job, pipeline, kind)"
    rules: list[dict[str, Any]] = []
    for counter in (m.EVENTS_READ, m.ROWS_STORED, m.DEAD_LETTERS):
        rules.append(
            {
                "record": f"pipeline:{counter.removesuffix('_total')}:{suffix}",
                "expr": f"{by} ({_rate(counter, p, window)})",
            }
        )
    rules.append(
        {
            "record": f"pipeline:usp_dead_letters_per_event_read:ratio_{suffix}",
            "expr": f"{by} ({_rate(m.DEAD_LETTERS, p, window)}) / "
            f"{by} ({_rate(m.EVENTS_READ, p, window)})",
        }
    )
    for histogram in p.latencies:
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            rules.append(
                {
                    "record": f"pipeline:{histogram}:{label}_{suffix}",
                    "expr": _quantile(q, histogram, p, window, "job, pipeline, kind, le"),
                }
            )
    rules.append(
        {"record": "pipeline:usp_consumer_lag:sum", "expr": f"{by} ({m.CONSUMER_LAG}{p.selector})"}
    )
    return rules


def _alert(
    name: str,
    expr: str,
    for_: timedelta,
    severity: str,
    p: Pipeline,
    summary: str,
    description: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": _duration(for_),
        "labels": {"severity": severity, "pipeline": p.name, "kind": p.kind},
        "annotations": {"summary": summary, "description": description},
    }


def _alerts(p: Pipeline, t: AlertThresholds) -> list[dict[str, Any]]:
    window = _duration(t.rate_window)
    by = "sum by (job, pipeline, kind)"
    what = f"{p.kind} {p.name}"
    lag = f"{by} ({m.CONSUMER_LAG}{p.selector})"
    return [
        _alert(
            "UspJobLatencyHigh",
            _quantile(0.99, m.JOB_LATENCY, p, window, "job, pipeline, kind, le")
            + f" > {_number(t.job_latency_p99_seconds)}",
            t.job_latency_for,
            "warning",
            p,
            f"{what}: p99 job latency above {_number(t.job_latency_p99_seconds)}s",
            "p99 time from read to visible in the store is {{ $value | humanizeDuration }} in "
            f"job {{{{ $labels.job }}}} (threshold {_number(t.job_latency_p99_seconds)}s for "
            f"{_duration(t.job_latency_for)}): the store or the job's sink is slow.",
        ),
        _alert(
            "UspDeadLetterRatioHigh",
            f"{by} ({_rate(m.DEAD_LETTERS, p, window)}) / {by} ({_rate(m.EVENTS_READ, p, window)})"
            f" > {_number(t.dead_letter_ratio)}",
            t.dead_letter_for,
            "warning",
            p,
            f"{what}: {p.dead_letters} above {_number(t.dead_letter_ratio * 100)}% of events read",
            f"{{{{ $value | humanizePercentage }}}} of the events read become {p.dead_letters} "
            f"in job {{{{ $labels.job }}}}; read the reasons on the "
            + ("dead-letter" if p.kind in ("signal", "join") else "late")
            + " topic.",
        ),
        _alert(
            "UspConsumerLagHigh",
            f"{lag} > {t.consumer_lag_records}",
            t.consumer_lag_for,
            "warning",
            p,
            f"{what}: consumer lag above {t.consumer_lag_records} records",
            "{{ $value | humanize }} records wait to be read by job {{ $labels.job }}: it "
            "does not keep up with its input.",
        ),
        _alert(
            "UspConsumerLagGrowing",
            f"{by} (deriv({m.CONSUMER_LAG}{p.selector}[{_duration(t.consumer_lag_for)}])) > 0 "
            f"and {lag} > {t.consumer_lag_growing_min_records}",
            t.consumer_lag_for,
            "warning",
            p,
            f"{what}: consumer lag keeps growing",
            "The lag of job {{ $labels.job }} has been rising for "
            f"{_duration(t.consumer_lag_for)} (it is above "
            f"{t.consumer_lag_growing_min_records} records): the job reads slower than events "
            "arrive.",
        ),
        _alert(
            "UspPipelineStalled",
            f"{by} (increase({m.EVENTS_READ}{p.selector}[{_duration(t.stalled_window)}])) == 0 "
            f"and {lag} > 0",
            t.stalled_for,
            "critical",
            p,
            f"{what}: no events read for {_duration(t.stalled_window)} while input waits",
            "Job {{ $labels.job }} read nothing for "
            f"{_duration(t.stalled_window)} although its consumer lag is above zero: it is "
            "stuck (restarting, back-pressured or blocked on a service).",
        ),
        _alert(
            "UspCheckpointStale",
            f"time() - {m.LAST_CHECKPOINT}{p.job_selector} > "
            f"{_number(t.checkpoint_age.total_seconds())}",
            t.checkpoint_for,
            "critical",
            p,
            f"{what}: no checkpoint for {_duration(t.checkpoint_age)}",
            "The newest completed checkpoint of job {{ $labels.job }} is "
            "{{ $value | humanizeDuration }} old: offsets are not committed and a restart "
            "would replay that much.",
        ),
        _alert(
            "UspJobDown",
            f"up{p.job_selector} == 0",
            t.target_down_for,
            "critical",
            p,
            f"{what}: job metrics endpoint down",
            "Prometheus cannot scrape job {{ $labels.job }} at {{ $labels.instance }}: the "
            "job is not running or its metrics endpoint does not answer.",
        ),
    ]


def _rules_file(p: Pipeline, t: AlertThresholds) -> str:
    group = f"usp.{p.kind}.{p.name}"
    document = {
        "groups": [
            {"name": f"{group}.recording", "rules": _recording_rules(p, t)},
            {"name": f"{group}.alerts", "rules": _alerts(p, t)},
        ]
    }
    header = (
        f"# Prometheus rules of {p.kind} {p.name!r}, generated by `usp generate`; do not edit.\n"
        "# Thresholds: usp_feast.monitoring.AlertThresholds (docs/monitoring.md).\n"
    )
    return header + _yaml(document)


def _flink_alert(
    name: str,
    expr: str,
    for_: timedelta,
    severity: str,
    summary: str,
    description: str,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = _duration(for_)
    rule["labels"] = {"severity": severity, "source": "flink"}
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def _flink_alerts(t: AlertThresholds) -> list[dict[str, Any]]:
    # `job` is the usp job's name (a target label, see prometheus.yml); `job_name` is Flink's.
    by_job = "max by (job, job_name)"
    by_task = "max by (job, job_name, task_name)"
    restarts = _duration(t.flink_restart_window)
    failed = _duration(t.flink_failed_checkpoint_window)
    # The reporter exports Flink's counts as gauges, so delta(), the function for gauges:
    # increase() assumes a counter and reads any drop as a reset (a linter flags it on a gauge).
    # Within a series (one job_id) these counts never drop, so delta()'s last-minus-first over
    # the window is their rise; its extrapolation scales it but never changes its sign, and the
    # alerts only ask whether it is above zero.
    started = (t.flink_failed_checkpoint_window + t.flink_startup_grace).total_seconds() * 1000
    duration_s = _number(t.flink_checkpoint_duration.total_seconds())
    return [
        _flink_alert(
            "UspFlinkJobRestarting",
            f"{by_job} (delta({m.FLINK_RESTARTS}[{restarts}])) > 0",
            timedelta(0),
            "critical",
            "Flink job {{ $labels.job }} restarted",
            f"The restart count of job {{{{ $labels.job }}}} rose in the last {restarts}: a task "
            "failed and Flink restored the last checkpoint. The job's log names the exception; "
            "if this alert keeps firing the job is in a crash loop.",
        ),
        _flink_alert(
            "UspFlinkCheckpointsFailing",
            f"{by_job} (delta({m.FLINK_FAILED_CHECKPOINTS}[{failed}])) > 0 "
            f"and on (job, job_name) {by_job} ({m.FLINK_UPTIME}) > {_number(started)}",
            timedelta(0),
            "warning",
            "Flink job {{ $labels.job }}: checkpoints failing",
            f"Checkpoints of job {{{{ $labels.job }}}} failed in the last {failed}: Kafka "
            "offsets are committed only when one completes, and a restart replays everything "
            "since the last that did. The job's log says why (a timeout, a slow sink, disk). "
            f"Failures in the job's first {_duration(t.flink_startup_grace)} are left out: "
            "Flink counts those it cannot trigger while tasks start.",
        ),
        _flink_alert(
            "UspFlinkCheckpointSlow",
            f"{by_job} ({m.FLINK_CHECKPOINT_DURATION}) / 1000 > {duration_s}",
            t.flink_checkpoint_duration_for,
            "warning",
            f"Flink job {{{{ $labels.job }}}}: checkpoints take over {duration_s}s",
            "The newest checkpoint of job {{ $labels.job }} took "
            "{{ $value | humanizeDuration }}, over "
            f"{duration_s}s for {_duration(t.flink_checkpoint_duration_for)}: barriers wait "
            "behind back-pressured tasks or the sinks' flushes are slow.",
        ),
        _flink_alert(
            "UspFlinkBackpressure",
            f"{by_task} ({m.FLINK_BACKPRESSURED_TIME}) > "
            f"{_number(t.flink_backpressure_ms_per_second)}",
            t.flink_backpressure_for,
            "warning",
            "Flink job {{ $labels.job }}: task {{ $labels.task_name }} back-pressured",
            "Task {{ $labels.task_name }} of job {{ $labels.job }} waits "
            "{{ $value | humanize }} ms of every second for its output to be taken (for "
            f"{_duration(t.flink_backpressure_for)}): a task after it, or the store it writes "
            "to, does not keep up. The busy time per task on the Flink dashboard shows which.",
        ),
    ]


def _flink_rules_file(t: AlertThresholds) -> str:
    document = {"groups": [{"name": "usp.flink.alerts", "rules": _flink_alerts(t)}]}
    header = (
        "# Prometheus alerts on Flink's own reporter (every job's second endpoint,\n"
        '# source="flink"), generated by `usp generate`; do not edit.\n'
        "# Thresholds: usp_feast.monitoring.AlertThresholds (docs/monitoring.md).\n"
    )
    return header + _yaml(document)


def _yaml(document: Any) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # one expression per line, however long
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _prometheus_config(found: list[Pipeline]) -> str:
    document = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [
            *(f"prometheus/{p.stem}.rules.yml" for p in found),
            f"prometheus/{FLINK_STEM}.rules.yml",
        ],
        "scrape_configs": [
            {
                "job_name": "usp",
                "honor_labels": True,
                "file_sd_configs": [{"files": [f"../{TARGETS_FILE}"], "refresh_interval": "30s"}],
                "relabel_configs": [
                    {"source_labels": ["usp_job"], "regex": "(.+)", "target_label": "job"},
                    {"action": "labeldrop", "regex": "usp_job"},
                ],
            }
        ],
    }
    header = (
        "# Prometheus config generated by `usp generate`; do not edit. Run from this folder:\n"
        "#   prometheus --config.file=prometheus.yml\n"
        "# Relative paths are resolved against this file's folder. The running jobs list their\n"
        f"# metrics endpoints in {TARGETS_FILE} (project root), two per job: its own\n"
        '# (source="usp") and Flink\'s reporter (source="flink"), each with a `usp_job` label\n'
        "# naming the job, which relabeling makes the target's `job` (so `up` and Flink's\n"
        "# series carry it), and honor_labels keeps the jobs' own `job` label on their series.\n"
    )
    return header + _yaml(document)


# --- Grafana dashboards -----------------------------------------------------------------------

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
"""Every panel's and query's data source: the dashboard's ``$datasource`` variable."""


def _uid(p: Pipeline) -> str:
    uid = f"usp-{p.kind}-{p.name}"
    if len(uid) <= 40:
        return uid
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    return f"{uid[:31]}-{digest}"


def _panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    unit: str,
    threshold: float | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
    }
    if threshold is not None:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": "green", "value": None}, {"color": "red", "value": threshold}],
        }
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


_LATENCY_HELP = {
    m.EVENT_LATENCY: "Event time → read by the job (includes time spent upstream and on Kafka).",
    m.INGESTION_LATENCY: "Broker append → read by the job (time spent on Kafka).",
    m.TRANSFORM_LATENCY: "Time an event spends in validation and transform (or the keyed step).",
    m.JOB_LATENCY: "Read by the job → visible in the store (the job's own latency).",
}


def _dashboard_rows(p: Pipeline, t: AlertThresholds) -> list[tuple[str, list[dict[str, Any]]]]:
    window = "$__rate_interval"
    latency = [
        _panel(
            f"{_short(h).capitalize()} (p50, p99)",
            _LATENCY_HELP[h],
            [
                (_quantile(q, h, p, window, "le"), label)
                for q, label in ((0.5, "p50"), (0.99, "p99"))
            ],
            "s",
            t.job_latency_p99_seconds if h == m.JOB_LATENCY else None,
        )
        for h in p.latencies
    ]
    read = f"sum ({_rate(m.EVENTS_READ, p, window)})"
    dead = f"sum ({_rate(m.DEAD_LETTERS, p, window)})"
    flow = [
        _panel(
            "Throughput (events/s)",
            "Input records read and rows written to the store, per second.",
            [(read, "read"), (f"sum ({_rate(m.ROWS_STORED, p, window)})", "stored")],
            "ops",
        ),
        _panel(
            f"{p.dead_letters.capitalize()} (/s)",
            f"Records sent aside ({p.dead_letters}) per second.",
            [(dead, p.dead_letters)],
            "ops",
        ),
        _panel(
            f"{p.dead_letters.capitalize()} (ratio of events read)",
            f"{p.dead_letters.capitalize()} per event read; the alert fires above "
            f"{_number(t.dead_letter_ratio * 100)}% for {_duration(t.dead_letter_for)}.",
            [(f"{dead} / {read}", "ratio")],
            "percentunit",
            t.dead_letter_ratio,
        ),
    ]
    service = [
        _panel(
            "Consumer lag (records)",
            "Records between the consumer group's committed offsets and the log end, per topic.",
            [(f"sum by (topic) ({m.CONSUMER_LAG}{p.selector})", "{{topic}}")],
            "short",
            t.consumer_lag_records,
        ),
        _panel(
            "Checkpoint age",
            "Time since the newest completed checkpoint of each job running this pipeline.",
            [(f"time() - {m.LAST_CHECKPOINT}{p.job_selector}", "{{job}}")],
            "s",
            t.checkpoint_age.total_seconds(),
        ),
        _panel(
            "Job metrics endpoint up",
            "1 while Prometheus scrapes the job, 0 when it cannot.",
            [(f"up{p.job_selector}", "{{job}} {{instance}}")],
            "none",
        ),
    ]
    return [
        ("Latency", latency),
        ("Throughput and " + p.dead_letters, flow),
        ("Kafka and checkpoints", service),
    ]


def _grid(rows: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Rows of panels laid out two abreast, numbered in order."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in rows:
        panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        y += 1
        for i, panel in enumerate(row):
            panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)}
            panels.append(panel)
        y += 8 * ((len(row) + 1) // 2)
    for number, panel in enumerate(panels, 1):
        panel["id"] = number
    return panels


_DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Prometheus",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "includeAll": False,
    "multi": False,
    "options": [],
    "refresh": 1,
    "regex": "",
    "skipUrlSync": False,
}

_FLINK_UID = "usp-flink"
_FLINK_TAGS = ["usp", "flink"]


def _dashboard(p: Pipeline, t: AlertThresholds) -> dict[str, Any]:
    return _dashboard_document(
        uid=_uid(p),
        title=f"usp · {p.kind} · {p.name}",
        description=f"Generated by `usp generate` for {p.kind} {p.name!r}; do not edit.",
        tags=["usp", p.kind],
        variables=[_DATASOURCE_VARIABLE],
        panels=_grid(_dashboard_rows(p, t)),
        # By tag, not URL: it holds wherever Grafana is served from.
        links=[
            {
                "title": "Flink jobs",
                "type": "dashboards",
                "tags": _FLINK_TAGS,
                "asDropdown": False,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
            }
        ],
    )


def _dashboard_document(
    *,
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    variables: list[dict[str, Any]],
    panels: list[dict[str, Any]],
    links: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "links": links,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "utc",
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": panels,
    }


def _dashboard_file(p: Pipeline, t: AlertThresholds) -> str:
    return json.dumps(_dashboard(p, t), indent=2, ensure_ascii=False) + "\n"


# The label_values() query of the dashboard's Flink job picker (Grafana's, not PromQL).
_FLINK_JOB_VARIABLE_QUERY = f"label_values({m.FLINK_UPTIME}, job_name)"


def _flink_dashboard_rows(t: AlertThresholds) -> list[tuple[str, list[dict[str, Any]]]]:
    window = "$__rate_interval"
    only = '{job_name=~"$job_name"}'

    def per_job(metric: str) -> str:
        return f"max by (job_name) ({metric}{only})"

    def per_task(metric: str, how: str = "max") -> str:
        return f"{how} by (job_name, task_name) ({metric}{only})"

    task = "{{job_name}} · {{task_name}}"
    checkpoints = [
        _panel(
            "Restarts",
            "Times each job restarted after a failure since it was submitted; the alert fires "
            f"when this rises within {_duration(t.flink_restart_window)}.",
            [(per_job(m.FLINK_RESTARTS), "{{job_name}}")],
            "none",
        ),
        _panel(
            "Uptime",
            "How long each job has been running.",
            [(per_job(m.FLINK_UPTIME), "{{job_name}}")],
            "ms",
        ),
        _panel(
            "Checkpoint duration",
            "How long the newest completed checkpoint took; the alert fires above "
            f"{_number(t.flink_checkpoint_duration.total_seconds())}s for "
            f"{_duration(t.flink_checkpoint_duration_for)}.",
            [(per_job(m.FLINK_CHECKPOINT_DURATION), "{{job_name}}")],
            "ms",
            t.flink_checkpoint_duration.total_seconds() * 1000,
        ),
        _panel(
            "Checkpoint size",
            "State the newest completed checkpoint wrote (only what changed, when incremental).",
            [(per_job(m.FLINK_CHECKPOINT_SIZE), "{{job_name}}")],
            "bytes",
        ),
        _panel(
            "Checkpoints completed and failed",
            "Checkpoints completed and failed per interval. Every job fails some while its "
            "tasks start: Flink counts those it cannot trigger yet as failed.",
            [
                (
                    f"max by (job_name) (delta({m.FLINK_COMPLETED_CHECKPOINTS}{only}[{window}]))",
                    "{{job_name}} completed",
                ),
                (
                    f"max by (job_name) (delta({m.FLINK_FAILED_CHECKPOINTS}{only}[{window}]))",
                    "{{job_name}} failed",
                ),
            ],
            "short",
        ),
        _panel(
            "Checkpoint age",
            "Time since the newest checkpoint completed.",
            [
                (
                    f"time() * 1000 - ({per_job(m.FLINK_CHECKPOINT_COMPLETED_TIMESTAMP)} > 0)",
                    "{{job_name}}",
                )
            ],
            "ms",
        ),
    ]
    tasks = [
        _panel(
            "Backpressure per task (ms/s)",
            "Milliseconds per second a task waited for its output to be taken (the busiest "
            "subtask); the alert fires above "
            f"{_number(t.flink_backpressure_ms_per_second)} for "
            f"{_duration(t.flink_backpressure_for)}. The task after a back-pressured one is "
            "the slow one.",
            [(per_task(m.FLINK_BACKPRESSURED_TIME), task)],
            "none",
            t.flink_backpressure_ms_per_second,
        ),
        _panel(
            "Busy time per task (ms/s)",
            "Milliseconds per second a task spent processing (the busiest subtask); near 1000 "
            "it is the bottleneck.",
            [(per_task(m.FLINK_BUSY_TIME), task)],
            "none",
        ),
        _panel(
            "Records in per task (/s)",
            "Records each task read per second, summed over its subtasks (a minute's average).",
            [(per_task(m.FLINK_RECORDS_IN, "sum"), task)],
            "ops",
        ),
    ]
    return [("Restarts and checkpoints", checkpoints), ("Tasks", tasks)]


def _flink_dashboard(t: AlertThresholds) -> dict[str, Any]:
    job_variable = {
        "name": "job_name",
        "label": "Flink job",
        "type": "query",
        "datasource": DATASOURCE,
        "definition": _FLINK_JOB_VARIABLE_QUERY,
        "query": {"query": _FLINK_JOB_VARIABLE_QUERY, "refId": "job_name"},
        "current": {},
        "hide": 0,
        "includeAll": True,
        "allValue": ".+",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    return _dashboard_document(
        uid=_FLINK_UID,
        title="usp · Flink jobs",
        description="Generated by `usp generate` from Flink's own reporter (restarts, "
        "checkpoints, backpressure) of every job; do not edit.",
        tags=_FLINK_TAGS,
        variables=[_DATASOURCE_VARIABLE, job_variable],
        panels=_grid(_flink_dashboard_rows(t)),
        links=[],
    )


def _flink_dashboard_file(t: AlertThresholds) -> str:
    return json.dumps(_flink_dashboard(t), indent=2, ensure_ascii=False) + "\n"


# --- README -----------------------------------------------------------------------------------


def _readme(found: list[Pipeline], t: AlertThresholds) -> str:
    alerts = "\n".join(
        f"| {name} | {when} | {severity} |" for name, when, severity in _alert_table(t)
    )
    flink_alerts = "\n".join(
        f"| {name} | {when} | {severity} |" for name, when, severity in _flink_alert_table(t)
    )
    rows = "\n".join(
        [
            *(
                f"| {p.kind} | `{p.name}` | `prometheus/{p.stem}.rules.yml` | "
                f"`grafana/{p.stem}.json` (uid `{_uid(p)}`) |"
                for p in found
            ),
            f"| Flink | every job | `prometheus/{FLINK_STEM}.rules.yml` | "
            f"`grafana/{FLINK_STEM}.json` (uid `{_FLINK_UID}`) |",
        ]
    )
    return f"""# Monitoring (generated)

Generated by `usp generate` from the definitions; do not edit: change a definition and run
`usp generate` again (`usp generate --check` fails while these files are stale). What the
metrics mean, the alerts and their thresholds: `docs/monitoring.md`.

| kind | definition | Prometheus rules | Grafana dashboard |
|---|---|---|---|
{rows}

## Prometheus

`prometheus.yml` loads every rule file above and scrapes the running jobs found through
file-based service discovery: `{TARGETS_FILE}` in the project root (the folder holding this
`monitoring/` folder), which the jobs keep up to date. Each job has two endpoints there: its
own metrics (`source="usp"`) and Flink's Prometheus reporter (`source="flink"`). Run
Prometheus from this folder:

    prometheus --config.file=prometheus.yml

Relative paths in `prometheus.yml` are resolved against its own folder. To use the rules with an
existing Prometheus, add `monitoring/prometheus/*.rules.yml` to its `rule_files` and copy the
`usp` scrape job as it is: `honor_labels` and its relabeling make `job` the Flink job's name on
every series and on `up`, which the alerts rely on.

## Grafana

Each dashboard is importable as it is (Dashboards → New → Import → upload the JSON) and asks
for a Prometheus data source (the `$datasource` variable). To provision them instead, point a
file provider at `monitoring/grafana/`:

    apiVersion: 1
    providers:
      - name: usp
        type: file
        options:
          path: /path/to/monitoring/grafana

## Alerts

Every definition's rule file has the same alerts, labelled with `pipeline`, `kind` and
`severity` (defaults: `usp_feast.monitoring.AlertThresholds`):

| alert | fires when | severity |
|---|---|---|
{alerts}

## Flink

`prometheus/{FLINK_STEM}.rules.yml` and `grafana/{FLINK_STEM}.json` (uid `{_FLINK_UID}`, linked
from every dashboard above) watch every job through Flink's own reporter: restarts,
checkpoints, backpressure, busy time and records in per task. Their alerts carry `job` (the usp
job), `job_name` (Flink's name for it, `usp:_<job>` with `+` written `_`), `severity` and
`source="flink"`:

| alert | fires when | severity |
|---|---|---|
{flink_alerts}
"""


def _alert_table(t: AlertThresholds) -> list[tuple[str, str, str]]:
    """Alert → when it fires → severity, in words (for the README)."""
    return [
        (
            "UspJobLatencyHigh",
            f"p99 job latency > {_number(t.job_latency_p99_seconds)}s for "
            f"{_duration(t.job_latency_for)}",
            "warning",
        ),
        (
            "UspDeadLetterRatioHigh",
            f"dead letters (late events for segments and sessions) > "
            f"{_number(t.dead_letter_ratio * 100)}% of events read for "
            f"{_duration(t.dead_letter_for)}",
            "warning",
        ),
        (
            "UspConsumerLagHigh",
            f"consumer lag > {t.consumer_lag_records} records for {_duration(t.consumer_lag_for)}",
            "warning",
        ),
        (
            "UspConsumerLagGrowing",
            f"consumer lag rising (deriv over {_duration(t.consumer_lag_for)}) and > "
            f"{t.consumer_lag_growing_min_records} records, for {_duration(t.consumer_lag_for)}",
            "warning",
        ),
        (
            "UspPipelineStalled",
            f"no event read in {_duration(t.stalled_window)} while consumer lag > 0, for "
            f"{_duration(t.stalled_for)}",
            "critical",
        ),
        (
            "UspCheckpointStale",
            f"newest completed checkpoint older than {_duration(t.checkpoint_age)}, for "
            f"{_duration(t.checkpoint_for)}",
            "critical",
        ),
        (
            "UspJobDown",
            f"`up == 0` (metrics endpoint not scraped) for {_duration(t.target_down_for)}",
            "critical",
        ),
    ]


def _flink_alert_table(t: AlertThresholds) -> list[tuple[str, str, str]]:
    """Flink alert → when it fires → severity, in words (for the README)."""
    return [
        (
            "UspFlinkJobRestarting",
            f"the job's restart count rose in the last {_duration(t.flink_restart_window)}",
            "critical",
        ),
        (
            "UspFlinkCheckpointsFailing",
            f"a checkpoint failed in the last {_duration(t.flink_failed_checkpoint_window)} "
            f"(not counting the job's first {_duration(t.flink_startup_grace)})",
            "warning",
        ),
        (
            "UspFlinkCheckpointSlow",
            f"the newest checkpoint took > {_number(t.flink_checkpoint_duration.total_seconds())}s,"
            f" for {_duration(t.flink_checkpoint_duration_for)}",
            "warning",
        ),
        (
            "UspFlinkBackpressure",
            f"a task back-pressured > {_number(t.flink_backpressure_ms_per_second)} ms/s, for "
            f"{_duration(t.flink_backpressure_for)}",
            "warning",
        ),
    ]
