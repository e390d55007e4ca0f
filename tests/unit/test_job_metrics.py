"""Job metrics: histogram counting, the exported text, the registry of jobs and their health."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from usp_feast import metric_names as names
from usp_feast.job_metrics import (
    LATENCY_BUCKETS,
    LatencyHistogram,
    PipelineMetrics,
    _JobCollector,
    latest_checkpoint,
)
from usp_feast.job_status import (
    JobMonitor,
    JobRecord,
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
    collector = _JobCollector(job, None, checkpoints)
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
        metrics_url=f"http://127.0.0.1:{port}/metrics",
        started_at="2026-11-27T00:00:00+00:00",
        pipelines=(("search", "signal"), ("active", "segment")),
        checkpoint_dir="/tmp/x",
        flink_metrics_url=f"http://127.0.0.1:{port + 1000}/metrics",
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
