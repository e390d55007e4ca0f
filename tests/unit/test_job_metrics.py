"""Job metrics: histogram counting, the exported text, the registry of jobs and their health."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from tests.conftest import free_port
from usp_feast import metric_names as names
from usp_feast.job_metrics import (
    LATENCY_BUCKETS,
    JobIdentity,
    JobMetrics,
    LagRefresher,
    LatencyHistogram,
    PipelineMetrics,
    _Interpreter,
    latest_checkpoint,
)
from usp_feast.job_status import (
    JobMonitor,
    JobRecord,
    combine,
    health,
    jobs_dir,
    parse_metrics,
    quantile,
    register_job,
    running_jobs,
    unregister_job,
)

pytestmark = pytest.mark.unit


def test_a_value_on_a_bound_counts_in_that_bucket_as_prometheus_le_says() -> None:
    h = LatencyHistogram((0.1, 1.0))
    h.observe_many([0.1, 1.0, 1.0000001])
    assert h.cumulative() == [(0.1, 1), (1.0, 2), (math.inf, 3)]


@given(st.lists(st.floats(min_value=-5, max_value=5000, allow_nan=False), max_size=200))
def test_batch_and_one_at_a_time_counting_agree(values: list[float]) -> None:
    batch, single = LatencyHistogram(), LatencyHistogram()
    batch.observe_many(values)
    for value in values:
        single.observe(value)
    assert batch.cumulative() == single.cumulative()
    assert batch.count == single.count == len(values)
    assert batch.total == pytest.approx(single.total)
    # Cumulative counts never fall, and the last one is every observation.
    counts = [c for _, c in batch.cumulative()]
    assert counts == sorted(counts) and counts[-1] == len(values)


def test_weighted_observation_counts_each_event() -> None:
    h = LatencyHistogram((0.01,))
    h.observe(0.002, count=500)
    h.observe(0.5, count=0)
    assert h.cumulative() == [(0.01, 500), (math.inf, 500)]
    assert h.total == pytest.approx(1.0)


@given(st.lists(st.floats(min_value=0, max_value=3000, allow_nan=False), min_size=1))
def test_quantile_lies_in_the_bucket_that_holds_the_true_quantile(values: list[float]) -> None:
    h = LatencyHistogram()
    h.observe_many(values)
    for q in (0.5, 0.99):
        estimate = quantile(q, tuple((b, float(c)) for b, c in h.cumulative()))
        assert estimate is not None
        rank = math.ceil(q * len(values))
        true = sorted(values)[max(rank - 1, 0)]
        bounds = (0.0, *LATENCY_BUCKETS)
        slot = np.searchsorted(LATENCY_BUCKETS, true, side="left")
        if slot == len(LATENCY_BUCKETS):  # beyond the last bound: the last bound answers
            assert estimate == LATENCY_BUCKETS[-1]
        else:
            assert bounds[slot] <= estimate <= bounds[slot + 1]


def test_quantile_of_nothing_is_none() -> None:
    assert quantile(0.5, ()) is None
    assert quantile(0.5, ((0.1, 0.0), (math.inf, 0.0))) is None


def _exported(metrics: PipelineMetrics, job: str = "j", checkpoints: Path | None = None) -> str:
    collector = JobMetrics(JobIdentity(job, None, checkpoints))
    collector.pipelines[metrics.pipeline] = metrics
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_signal_pipeline_exports_every_contract_metric_and_round_trips() -> None:
    metrics = PipelineMetrics("search", "signal", "g", ("events.search",))
    now = 1_700_000_000.0
    metrics.batch_read(now, 4, [now * 1000 - 2_000] * 3, [now * 1000 - 50, -1, -1, -1])
    metrics.transformed(4, 0.004)
    metrics.dead_letters += 1
    metrics.rows_stored(3, now, written_at=now + 0.02)
    text = _exported(metrics)
    sample = parse_metrics(text, at=1.0)
    assert sample.counters == {
        (names.EVENTS_READ, "search"): 4.0,
        (names.ROWS_STORED, "search"): 3.0,
        (names.DEAD_LETTERS, "search"): 1.0,
    }
    assert sample.kinds == {"search": "signal"}
    # Each histogram holds what was observed: 3 events 2 s old, 1 append 50 ms ago (the
    # unknown broker times are left out), 4 transforms of 1 ms, 3 rows stored in 20 ms.
    expected = {
        names.EVENT_LATENCY: (3, 2.0),
        names.INGESTION_LATENCY: (1, 0.05),
        names.TRANSFORM_LATENCY: (4, 0.001),
        names.JOB_LATENCY: (3, 0.02),
    }
    for name, (count, seconds) in expected.items():
        buckets = sample.histograms[(name, "search")]
        assert buckets[-1][1] == count
        estimate = quantile(0.5, buckets)
        assert estimate is not None and seconds / 2.5 <= estimate <= seconds * 2.5, name
    exported = {line.split("{")[0] for line in text.splitlines() if line and line[0] != "#"}
    pipeline_series = names.series_for_kind("signal") - {
        names.CONSUMER_LAG,
        names.LAST_CHECKPOINT,
    }
    assert pipeline_series <= exported


def test_segments_and_sessions_export_no_ingestion_latency() -> None:
    metrics = PipelineMetrics("active", "segment", "g", ("usp.signal.search",))
    metrics.read_one(10.0, 9_000)
    metrics.rows_stored_at([9_500.0], written_at=10.0)
    text = _exported(metrics)
    assert names.INGESTION_LATENCY not in text
    sample = parse_metrics(text, at=1.0)
    assert sample.histograms[(names.EVENT_LATENCY, "active")][-1][1] == 1
    assert quantile(0.5, sample.histograms[(names.JOB_LATENCY, "active")]) == pytest.approx(
        0.5, rel=0.6
    )


def test_checkpoint_time_is_the_newest_completed_checkpoint(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "missing") is None
    old = tmp_path / "job1" / "chk-1"
    new = tmp_path / "job1" / "chk-2"
    unfinished = tmp_path / "job1" / "chk-3"  # no _metadata yet: not complete
    for folder in (old, new, unfinished):
        folder.mkdir(parents=True)
    (old / "_metadata").write_text("x")
    (new / "_metadata").write_text("x")
    os.utime(old / "_metadata", (1_000, 1_000))
    os.utime(new / "_metadata", (2_000, 2_000))
    assert latest_checkpoint(tmp_path) == new
    text = _exported(PipelineMetrics("s", "signal", "g", ()), checkpoints=tmp_path)
    assert parse_metrics(text, at=0.0).last_checkpoint == 2_000.0


def _record(job: str, pid: int, port: int = 9) -> JobRecord:
    return JobRecord(
        job=job,
        pid=pid,
        metrics_urls=(f"http://127.0.0.1:{port}/metrics",),
        started_at="2026-11-27T00:00:00+00:00",
        pipelines=(("search", "signal"), ("active", "segment")),
        checkpoint_dir="/tmp/x",
        flink_metrics_urls=(f"http://127.0.0.1:{port + 1000}/metrics",),
    )


def test_registry_lists_live_jobs_and_forgets_dead_ones(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    register_job(_record("alive", os.getpid(), 1234), tmp_path)
    register_job(_record("gone", int(dead.stdout), 1235), tmp_path)
    targets = json.loads((jobs_dir(tmp_path) / "targets.json").read_text())
    assert sorted(t["targets"][0] for t in targets) == [
        "127.0.0.1:1234",
        "127.0.0.1:1235",
        "127.0.0.1:2234",
        "127.0.0.1:2235",
    ]

    assert [r.job for r in running_jobs(tmp_path)] == ["alive"]
    assert [p.name for p in jobs_dir(tmp_path).glob("gone*")] == []
    targets = json.loads((jobs_dir(tmp_path) / "targets.json").read_text())
    assert targets == [
        {"targets": ["127.0.0.1:1234"], "labels": {"usp_job": "alive", "source": "usp"}},
        {"targets": ["127.0.0.1:2234"], "labels": {"usp_job": "alive", "source": "flink"}},
    ]

    unregister_job("alive", os.getpid(), tmp_path)
    assert running_jobs(tmp_path) == []
    assert json.loads((jobs_dir(tmp_path) / "targets.json").read_text()) == []


def test_health_rates_come_from_two_samples_and_survive_a_counter_reset() -> None:
    def sample(at: float, read: float, dead: float, fast: int, slow: int) -> str:
        metrics = PipelineMetrics("search", "signal", "g", ())
        metrics.read, metrics.dead_letters = int(read), int(dead)
        metrics.job_latency.observe(0.003, fast)
        metrics.job_latency.observe(4.0, slow)
        return _exported(metrics)

    record = _record("j", os.getpid())
    first = parse_metrics(sample(0, 100, 10, fast=100, slow=0), at=10.0)
    second = parse_metrics(sample(0, 300, 30, fast=100, slow=50), at=12.0)
    found = health(record, second, first, None)
    search = found.pipelines[0]
    assert search.events_per_s == pytest.approx(100.0)
    assert search.dead_letters_per_s == pytest.approx(10.0)
    # Between the samples only slow writes happened: the recent p50 is seconds, not ms.
    assert search.latency_ms["job"]["p50"] is not None and search.latency_ms["job"]["p50"] > 2500
    # A pipeline the job does not export (yet) has no numbers, but is listed.
    assert found.pipelines[1].pipeline == "active" and found.pipelines[1].events_per_s is None
    restarted = parse_metrics(sample(0, 40, 0, fast=1, slow=0), at=14.0)
    assert health(record, restarted, second, None).pipelines[0].events_per_s == pytest.approx(20.0)
    assert health(record, first, None, None).pipelines[0].events_per_s is None


def test_monitor_reports_a_registered_job_that_does_not_answer(tmp_path: Path) -> None:
    register_job(_record("starting", os.getpid(), port=1), tmp_path)
    found = JobMonitor(tmp_path, timeout=0.5).sample()
    assert [(j.job, j.running) for j in found] == [("starting", False)]
    assert found[0].error is not None and "not answering" in found[0].error
    assert json.loads(json.dumps(found[0].to_dict()))["pipelines"][0]["pipeline"] == "search"


def _interpreter_text(*jobs: tuple[str, int]) -> str:
    """One TaskManager's endpoint: pipeline ``search`` of each ``(job, events read)``."""
    interpreter = _Interpreter()
    for job, read in jobs:
        metrics = PipelineMetrics("search", "signal", "g", ())
        metrics.read = read
        metrics.job_latency.observe(0.003, read)
        interpreter.jobs[job] = JobMetrics(JobIdentity(job))
        interpreter.jobs[job].pipelines["search"] = metrics
    registry = CollectorRegistry()
    registry.register(interpreter)
    return generate_latest(registry).decode()


def test_a_taskmanager_serves_each_jobs_pipelines_apart_in_valid_text() -> None:
    text = _interpreter_text(("a", 3), ("b", 5))
    # The text format allows one TYPE line per name, however many jobs share a name.
    types = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    for job, read in (("a", 3.0), ("b", 5.0)):
        assert parse_metrics(text, at=0.0, job=job).counters[(names.EVENTS_READ, "search")] == read


def test_a_cluster_jobs_samples_from_its_taskmanagers_add_up() -> None:
    # Job "a" runs on two TaskManagers; the second also runs job "b".
    first = parse_metrics(_interpreter_text(("a", 3)), at=1.0, job="a")
    second = parse_metrics(_interpreter_text(("a", 4), ("b", 50)), at=2.0, job="a")
    both = combine([first, second])
    assert both.counters[(names.EVENTS_READ, "search")] == 7.0
    assert both.histograms[(names.JOB_LATENCY, "search")][-1][1] == 7.0
    assert both.at == 2.0
    # Each TaskManager reports the whole consumer group's lag: not added up.
    lagging = [replace(first, lag={"search": 40.0}), replace(second, lag={"search": 42.0})]
    assert combine(lagging).lag == {"search": 42.0}
    record = _record("a", os.getpid())
    assert health(record, both, None, None).pipelines[0].latency_ms["job"]["p50"] is not None


def test_a_cluster_endpoint_shared_by_jobs_is_one_scrape_target(tmp_path: Path) -> None:
    shared = ("http://127.0.0.1:4001/metrics", "http://127.0.0.1:4002/metrics")
    for job in ("b", "a"):
        register_job(replace(_record(job, os.getpid()), metrics_urls=shared), tmp_path)
    targets = json.loads((jobs_dir(tmp_path) / "targets.json").read_text())
    usp = [t for t in targets if t["labels"]["source"] == "usp"]
    assert usp == [
        {"targets": ["127.0.0.1:4001"], "labels": {"usp_job": "a+b", "source": "usp"}},
        {"targets": ["127.0.0.1:4002"], "labels": {"usp_job": "a+b", "source": "usp"}},
    ]


def test_monitor_combines_the_taskmanagers_that_answer(tmp_path: Path) -> None:
    from prometheus_client import start_http_server

    interpreter = _Interpreter()
    metrics = PipelineMetrics("search", "signal", "g", ())
    metrics.read = 9
    interpreter.jobs["a"] = JobMetrics(JobIdentity("a"))
    interpreter.jobs["a"].pipelines["search"] = metrics
    registry = CollectorRegistry()
    registry.register(interpreter)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        # A standby TaskManager serves nothing until a failover moves work onto it.
        urls = (f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{free_port()}/metrics")
        register_job(replace(_record("a", os.getpid()), metrics_urls=urls), tmp_path)
        (found,) = JobMonitor(tmp_path, timeout=0.5).sample()
    finally:
        server.shutdown()
        thread.join(5)
    assert found.running and found.error is None
    assert found.pipelines[0].pipeline == "search"


def test_a_pipelines_series_leave_with_its_last_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from usp_feast import job_metrics

    monkeypatch.delenv(job_metrics.ENV, raising=False)  # kept, not served
    job = JobIdentity(f"release-{os.getpid()}")
    first = job_metrics.pipeline_metrics("search", "signal", "g", (), job)
    assert job_metrics.pipeline_metrics("search", "signal", "g", (), job) is first  # 2 tasks
    interpreter = job_metrics._interpreter
    assert interpreter is not None
    job_metrics.release(job, "search")
    assert interpreter.jobs[job.job].pipelines == {"search": first}
    job_metrics.release(job, "search")
    # A TaskManager outlives its jobs: a cancelled job's series must not stay, frozen.
    assert job.job not in interpreter.jobs
    job_metrics.release(job, "search")  # a task that closes late changes nothing


def test_a_stopped_lag_refresher_closes_its_broker_connections() -> None:
    class Broker:
        closed = False

        def lag(self, group: str, topics: tuple[str, ...]) -> list[tuple[str, int]]:
            return []

        def close(self) -> None:
            self.closed = True

    broker = Broker()
    refresher = LagRefresher(broker, {}, interval=0.01)
    refresher.stop()
    deadline = time.monotonic() + 5
    while not broker.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.closed


def test_random_traffic_quantiles_track_numpy() -> None:
    rng = random.Random(4)
    values = [rng.lognormvariate(-3, 1) for _ in range(20_000)]
    h = LatencyHistogram()
    h.observe_many(values)
    buckets = tuple((b, float(c)) for b, c in h.cumulative())
    for q in (0.5, 0.99):
        estimate = quantile(q, buckets)
        assert estimate == pytest.approx(float(np.quantile(values, q)), rel=0.35)


def test_status_command_lists_registered_jobs_and_rejects_a_bad_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from usp_feast.cli import main

    monkeypatch.setenv("USP_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    empty = runner.invoke(main, ["status", "--once", "--interval", "0.01"])
    assert empty.exit_code == 0 and "none running" in empty.output
    register_job(_record("search+view", os.getpid(), port=1), tmp_path)
    listed = runner.invoke(main, ["status", "--once", "--interval", "0.01"])
    assert listed.exit_code == 0, listed.output
    assert "search+view" in listed.output and "starting or unreachable" in listed.output
    as_json = runner.invoke(main, ["status", "--json", "--interval", "0.01"])
    assert [j["job"] for j in json.loads(as_json.output)] == ["search+view"]
    bad = runner.invoke(main, ["status", "--interval", "0"])
    assert bad.exit_code == 2 and "--interval" in bad.output
