"""Job metrics end to end: a running job exports every metric its monitoring queries.

One Flink job runs a pipeline of every kind (the ``search``, ``view`` and ``booking`` signals,
the ``wishlist_enriched`` join, the ``browse_session`` engagement and the
``active_trip_planner`` segment) over generated traffic with malformed, duplicate and late
events. Its Prometheus endpoint is scraped, and every series that the generated alert rules
and Grafana dashboard of each definition (``usp generate``'s ``monitoring/``) query is found
there with the definition's labels. The counts are checked against what was produced, and
``usp status`` reads the same job through the registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.e2e.harness import JOB_START_TIMEOUT, Job, wait_for, workspace
from usp_feast import metric_names as names
from usp_feast.definitions import load_definitions
from usp_feast.job_status import JobMonitor, jobs_dir, running_jobs
from usp_feast.kafka_io import produce_events
from usp_feast.monitoring import render_monitoring
from usp_feast.monitoring_checks import PROMETHEUS_SERIES, referenced_metrics
from usp_feast.traffic import TrafficConfig, generate

pytestmark = pytest.mark.e2e

CONFIGS = {
    "search": "search",
    "view": "view",
    "booking": "booking",
    "wishlist_enriched": "join_wishlist_enriched",
    "browse_session": "session_browse_session",
    "active_trip_planner": "segment_active_trip_planner",
}


@dataclass
class Running:
    """The job under test and what was produced for it."""

    job: Job
    repo: Path
    metrics_url: str
    produced: Counter[tuple[str, str]]  # (event type, kind) → events

    def job_label(self) -> str:
        """The ``job`` label the running job exports (its registry record has it)."""
        return next(r.job for r in running_jobs() if r.metrics_urls == (self.metrics_url,))

    def scrape(self) -> dict[tuple[str, str | None], float]:
        """``(sample name, pipeline label)`` → value; job-level series have no pipeline."""
        text = requests.get(self.metrics_url, timeout=5).text
        found: dict[tuple[str, str | None], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, sample.labels.get("pipeline"))
                found[key] = found.get(key, 0.0) + sample.value
        return found


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[Running]:
    space = workspace(tmp_path_factory.mktemp("e2e_metrics"), stack.kafka, stack.redis, "metrics")
    root, repo, prefix, streaming = space.root, space.repo, space.prefix, space.streaming
    port = free_port()
    job = Job(
        repo,
        [streaming / f"{config}.json" for config in CONFIGS.values()],
        # A "+" as in the names of jobs running several definitions: Flink must checkpoint
        # into this very folder (a restart restores from it), and the gauge read it.
        root / "checkpoints" / "search+view",
        root / "job.log",
        env={"USP_METRICS_PORT": str(port)},
    )
    events = list(
        generate(
            TrafficConfig(users=40, seed=11, span=timedelta(minutes=20))  # ends by now
        )
    )
    produced = Counter((e.event_type, e.kind) for e in events)
    assert {"malformed", "duplicate", "late"} <= {kind for _, kind in produced}
    running = Running(job, repo, f"http://127.0.0.1:{port}/metrics", produced)
    job.start()
    try:
        produce_events(
            stack.kafka, [(prefix + e.topic, json.dumps(e.payload).encode()) for e in events]
        )

        def every_pipeline_stored() -> bool:
            try:
                found = running.scrape()
            except requests.RequestException:
                return False  # the job's Python steps are not up yet
            return all(found.get((names.ROWS_STORED, p), 0) > 0 for p in CONFIGS)

        wait_for(every_pipeline_stored, job, JOB_START_TIMEOUT, "rows stored by every pipeline")
        searches = sum(n for (kind, _), n in produced.items() if kind == "search")
        wait_for(
            lambda: running.scrape().get((names.EVENTS_READ, "search")) == searches,
            job,
            60,
            "every search event read",
        )
        # The checkpoint gauge exists once a checkpoint has completed; the first ones of a
        # starting job may fail (Flink cannot trigger them yet), so one may not have yet.
        # Likewise the lag of each pipeline exists once the job's background refresh has
        # asked the broker for it (every 5 s; a slow broker takes longer).
        wait_for(
            lambda: (
                (names.LAST_CHECKPOINT, None) in (found := running.scrape())
                and all((names.CONSUMER_LAG, p) in found for p in CONFIGS)
            ),
            job,
            120,
            "the first completed checkpoint and every pipeline's consumer lag",
        )
        yield running
    finally:
        job.stop()


def test_every_metric_the_generated_monitoring_queries_is_exported(running: Running) -> None:
    definitions = load_definitions(running.repo)
    rendered = render_monitoring(definitions)
    exported = running.scrape()
    for pipeline, config in CONFIGS.items():
        rules = rendered[f"prometheus/{pipeline}.rules.yml"]
        dashboard = rendered[f"grafana/{pipeline}.json"]
        queried = (referenced_metrics(rules) | referenced_metrics(dashboard)) - PROMETHEUS_SERIES
        assert queried, f"{pipeline}: its monitoring queries no metric"
        missing = sorted(
            name
            for name in queried
            if (name, pipeline) not in exported and (name, None) not in exported
        )
        assert not missing, f"{pipeline} ({config}): queried but not exported: {missing}"
        # Not just present: every latency the monitoring shows has measured this traffic.
        unmeasured = sorted(
            name
            for name in queried
            if name.endswith("_bucket")
            and not exported.get((name.removesuffix("_bucket") + "_count", pipeline))
        )
        assert not unmeasured, f"{pipeline}: no observations in {unmeasured}"


def test_counts_match_what_was_produced(running: Running) -> None:
    exported = running.scrape()
    searches = sum(n for (kind, _), n in running.produced.items() if kind == "search")
    malformed = running.produced[("search", "malformed")]
    read = exported[(names.EVENTS_READ, "search")]
    dead = exported[(names.DEAD_LETTERS, "search")]
    assert (read, dead) == (searches, malformed)
    # Every other search (valid, duplicate, late) became a stored row.
    assert exported[(names.ROWS_STORED, "search")] == read - dead
    # The broker stamps every record: each read search has an ingestion latency, and each
    # stored row an event and a job latency.
    assert exported[(f"{names.INGESTION_LATENCY}_count", "search")] == read
    assert exported[(f"{names.EVENT_LATENCY}_count", "search")] == read - dead
    assert exported[(f"{names.JOB_LATENCY}_count", "search")] == read - dead
    assert exported[(f"{names.TRANSFORM_LATENCY}_count", "search")] == read
    # Segments and sessions read signal topics: no broker append time to measure.
    assert (f"{names.INGESTION_LATENCY}_count", "browse_session") not in exported
    assert exported[(names.EVENTS_READ, "browse_session")] > 0


def test_lag_drains_and_checkpoints_are_reported(running: Running) -> None:
    # Flink commits the group's offsets when a checkpoint completes: then the lag is 0.
    wait_for(
        lambda: running.scrape().get((names.CONSUMER_LAG, "search")) == 0,
        running.job,
        60,
        "the search consumer lag at 0",
    )
    checkpoint = running.scrape()[(names.LAST_CHECKPOINT, None)]
    folder = running.repo.parent / "checkpoints" / "search+view"
    newest = max(p.stat().st_mtime for p in folder.glob("*/chk-*/_metadata"))
    assert checkpoint == pytest.approx(newest, abs=30)


def test_status_reads_the_job_through_the_registry(running: Running) -> None:
    ours = [r for r in running_jobs() if r.metrics_urls == (running.metrics_url,)]
    assert len(ours) == 1 and {p for p, _ in ours[0].pipelines} == set(CONFIGS)
    monitor = JobMonitor()
    monitor.sample()
    health = next(h for h in monitor.sample() if h.metrics_urls == (running.metrics_url,))
    search = next(p for p in health.pipelines if p.pipeline == "search")
    assert health.running and search.kind == "signal" and search.events_per_s is not None
    assert set(search.latency_ms) == {"event", "ingestion", "transform", "job"}
    segment = next(p for p in health.pipelines if p.pipeline == "active_trip_planner")
    assert "ingestion" not in segment.latency_ms and segment.kind == "segment"

    shown = subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", "status", "--json", "--interval", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    jobs = [j for j in json.loads(shown.stdout) if j["metrics_urls"] == [running.metrics_url]]
    assert len(jobs) == 1 and jobs[0]["running"]
    assert {p["pipeline"] for p in jobs[0]["pipelines"]} == set(CONFIGS)


def test_prometheus_scrapes_the_job_and_evaluates_every_generated_rule(
    running: Running, tmp_path: Path
) -> None:
    """A real Prometheus (Debian's, installed by setup) on the generated ``prometheus.yml``."""
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: scripts/setup.sh installs it"
    folder = tmp_path / "monitoring"
    for path, text in render_monitoring(load_definitions(running.repo)).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    # The generated file as it is, but quicker (seconds, not 15 s scrapes) and pointed at
    # this machine's registry of running jobs wherever the test runs from.
    config = (folder / "prometheus.yml").read_text()
    for slow, quick in (("15s", "1s"), ("30s", "1s")):
        config = config.replace(f"interval: {slow}", f"interval: {quick}")
    config = config.replace("../.usp/jobs/targets.json", str(jobs_dir() / "targets.json"))
    assert str(jobs_dir()) in config
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                prometheus,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    job = running.job_label()

    def query(expr: str) -> list[dict]:
        try:
            answer = requests.get(f"{api}/query", params={"query": expr}, timeout=5).json()
        except requests.RequestException:
            return []
        return answer["data"]["result"] if answer.get("status") == "success" else []

    try:
        # Both endpoints of the job scraped (its own and Flink's reporter), as `job`.
        wait_for(
            lambda: len(query(f'up{{job="{job}"}} == 1')) == 2,
            running.job,
            90,
            "Prometheus scraping both endpoints of the job",
        )
        # The job's own series reach Prometheus with their labels.
        wait_for(
            lambda: bool(query(f'usp_events_read_total{{job="{job}",pipeline="search"}} > 0')),
            running.job,
            30,
            "the search counter in Prometheus",
        )
        rules = requests.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        loaded = {g["file"].rsplit("/", 1)[-1] for g in rules}
        assert loaded == {p.name for p in (folder / "prometheus").glob("*.rules.yml")}

        def every_rule_evaluated_ok() -> bool:
            groups = requests.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
            return all(
                r["health"] == "ok" and not r["lastEvaluation"].startswith("0001")
                for g in groups
                for r in g["rules"]
            )

        wait_for(every_rule_evaluated_ok, running.job, 30, "every rule evaluated without error")
        # The recording rules produce this job's series (a quantile is NaN while no new
        # events arrive: a rate of zero has no quantile; Prometheus says so, not 0).
        recorded = (
            "pipeline:usp_events_read:rate5m",
            "pipeline:usp_ingestion_latency_seconds:p99_rate5m",
            "pipeline:usp_consumer_lag:sum",
        )
        wait_for(
            lambda: all(query(f'{r}{{job="{job}",pipeline="search"}}') for r in recorded),
            running.job,
            60,
            "the recorded series of the search pipeline",
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_stopped_job_leaves_the_registry(running: Running) -> None:
    # Last in this module: stops the job.
    running.job.stop()
    assert [r for r in running_jobs() if r.metrics_urls == (running.metrics_url,)] == []
