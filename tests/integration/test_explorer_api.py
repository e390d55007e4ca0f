"""What the signals explorer reads, as a client sees it: `usp serve` on real Redis.

``/v1/definitions``, ``/v1/jobs`` (jobs registered in a state directory of the test's own,
each serving real job metrics), the version count of ``/v1/users/{id}/signals/{signal}``,
and the explorer's static pages.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from tests.conftest import free_port, http_get, start_server
from usp_feast import SignalClient
from usp_feast.definitions import load_definitions
from usp_feast.job_metrics import PipelineMetrics
from usp_feast.job_status import JobRecord, register_job, started_now

pytestmark = pytest.mark.integration

USER = 2101
JOB = "search+view"


class _Job(Collector):
    """A running job's metrics endpoint, from the exporter's own per-pipeline objects."""

    def __init__(self, *pipelines: PipelineMetrics) -> None:
        self.pipelines = pipelines

    def collect(self) -> Iterable[Metric]:
        for pipeline in self.pipelines:
            yield from pipeline.families(JOB)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A state directory where one job serves metrics and one registered job does not answer."""
    state = tmp_path_factory.mktemp("state")
    search = PipelineMetrics("search", "signal", "g", ("events.search",))
    view = PipelineMetrics("view", "signal", "g", ("events.listing_view",))
    search.batch_read(datetime.now(UTC).timestamp(), 3, [0, 0, 0])
    registry = CollectorRegistry()
    registry.register(_Job(search, view))
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    for name, url in ((JOB, f"http://127.0.0.1:{port}/metrics"), ("gone", "http://127.0.0.1:9/")):
        register_job(
            JobRecord(
                job=name,
                pid=os.getpid(),  # alive for as long as the test runs
                metrics_urls=(url,),
                started_at=started_now(),
                pipelines=(("search", "signal"), ("view", "signal")),
                checkpoint_dir=str(state / "checkpoints"),
            ),
            state,
        )
    yield {"state": state, "search": search}
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def api(applied_repo: Path, feature_store, jobs: dict[str, Any]) -> Iterator[str]:
    now = datetime.now(UTC)
    rows = pd.DataFrame(
        [
            {
                "user_id": USER,
                "event_id": f"x{i}",
                "event_ts": now - timedelta(minutes=i),
                "listing_id": 300 + i,
                "city": "Oslo",
                "price": 70.0 + i,
                "room_type": "private_room",
            }
            for i in range(3)
        ]
    )
    feature_store.push("view_push", rows)
    feature_store.push("view_push", rows[rows["event_id"] == "x1"])  # a replay of one event
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("USP_STATE_DIR", str(jobs["state"]))  # the server's job registry
        port = free_port()
        process = start_server(applied_repo, port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_definitions_list_every_definition_with_what_the_explorer_shows(
    api: str, applied_repo: Path
) -> None:
    body = http_get(f"{api}/v1/definitions").json()
    loaded = load_definitions(applied_repo, check_imports=False)
    listed = {kind: [d["name"] for d in found] for kind, found in body.items()}
    assert listed == {
        "signals": ["booking", "search", "view", "wishlist"],
        "joins": ["wishlist_enriched"],
        "segments": sorted(s.name for s in loaded.segments),
        "sessions": sorted(s.name for s in loaded.sessions),
    }
    search = body["signals"][1]
    assert search["kind"] == "signal" and search["owner"] == "discovery-team"
    assert search["description"].startswith("Searches a user ran")
    assert search["source"] == {"topic": "events.search"}
    assert search["fields"]["guests"] == "int"
    assert (search["retention"], search["ttl"], search["online_ttl"]) == ("30d", "1d", "1d")
    assert search["dead_letter_topic"] == "usp.dlq.search"
    booking = body["signals"][0]
    assert (booking["ttl"], booking["online_ttl"]) == (None, "365d")  # defaults to retention
    [join] = body["joins"]
    assert join["summary"].startswith("events.wishlist_add joined on listing_id")
    assert join["fields"] == {
        "listing_id": "int",
        "price": "float",
        "rating": "float",
        "available": "bool",
        "right_event_ts": "string",
    }
    [segment] = body["segments"]
    assert (segment["trigger"]["signal"], segment["exit"][0]["signal"]) == ("search", "booking")
    kinds = {s["name"]: (s["kind"], s["summary"]) for s in body["sessions"]}
    assert kinds["browse_session"][0] == "session" and kinds["views_10m"][0] == "window"
    assert "30m gap" in kinds["browse_session"][1]


def test_jobs_report_each_registered_job_from_its_metrics_endpoint(
    api: str, jobs: dict[str, Any]
) -> None:
    first = http_get(f"{api}/v1/jobs").json()
    assert first["count"] == 2
    by_name = {job["job"]: job for job in first["jobs"]}
    running = by_name[JOB]
    assert running["running"] is True and running["metrics_urls"][0].endswith("/metrics")
    assert set(running) >= {"started_at", "last_checkpoint_age_s", "pipelines"}
    search = running["pipelines"][0]
    assert (search["pipeline"], search["kind"]) == ("search", "signal")
    assert search["events_per_s"] is None  # a rate needs a previous sample
    assert set(search["latency_ms"]) >= {"event", "transform", "job"}
    assert set(search["latency_ms"]["event"]) == {"p50", "p99"}
    assert by_name["gone"]["running"] is False and by_name["gone"]["pipelines"][0]["lag"] is None

    jobs["search"].read += 50  # the job reads on between two requests
    second = {job["job"]: job for job in http_get(f"{api}/v1/jobs").json()["jobs"]}
    assert second[JOB]["pipelines"][0]["events_per_s"] > 0  # one monitor keeps the last sample


def test_recent_events_carry_how_many_versions_the_store_holds(
    api: str, applied_repo: Path
) -> None:
    body = http_get(f"{api}/v1/users/{USER}/signals/view").json()
    assert [(e["event_id"], e["versions"]) for e in body["events"]] == [
        ("x0", 1),
        ("x1", 2),
        ("x2", 1),
    ]
    client = SignalClient.from_repo(applied_repo)
    assert [e.versions for e in client.recent(USER, "view")] == [1, 2, 1]
    assert client.recent(USER, "view")[1].to_dict()["versions"] == 2


@pytest.mark.parametrize("path", ["/v1/definitions?verbose=1", "/v1/jobs?job=x"])
def test_the_new_routes_refuse_unknown_parameters_like_the_others(api: str, path: str) -> None:
    response = http_get(api + path)
    assert response.status_code == 400
    assert "unknown query parameter" in response.json()["detail"]


def test_the_new_routes_are_counted_in_the_metrics(api: str) -> None:
    http_get(f"{api}/v1/definitions")
    text = http_get(f"{api}/metrics").text
    assert 'usp_http_requests_total{route="definitions",status="200"}' in text
    assert 'usp_http_requests_total{route="jobs",status="400"}' in text


def test_the_explorer_is_served_and_the_root_leads_to_it(api: str) -> None:
    root = http_get(f"{api}/")
    assert root.url == f"{api}/explorer/" and root.history[0].status_code == 307
    page = http_get(f"{api}/explorer")
    assert page.status_code == 200 and 'data-testid="user-id"' in page.text
    definitions = http_get(f"{api}/explorer/definitions.html")
    assert 'src="definitions.js"' in definitions.text
    for asset, kind in (("explorer.css", "text/css"), ("timeline.js", "javascript")):
        response = http_get(f"{api}/explorer/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    missing = http_get(f"{api}/explorer/nothing.js")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no such endpoint: /explorer/nothing.js"}
