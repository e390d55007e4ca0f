"""Stream = batch: the same events through the Flink job and through the backfill agree.

Generated traffic (malformed, duplicate and late events included) goes to Kafka, where the
generated `search` job validates, transforms and stores it, and the very same events are
written as Parquet history. `usp reconcile` then recomputes the signal from the history with
the backfill's code and compares it, event by event, with what the stream wrote to the
versioned store and to the offline store: there must be no difference. An event only the
history holds must be reported, so the comparison is seen to work.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from tests.e2e.harness import JOB_START_TIMEOUT, Job, wait_for, workspace
from usp_feast import SignalClient
from usp_feast.kafka_io import produce_events
from usp_feast.offline import latest_offline_versions
from usp_feast.raw_history import days_between, write_history
from usp_feast.traffic import RawEvent, TrafficConfig, generate

pytestmark = pytest.mark.e2e


def usp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict]:
    """The search job has processed the traffic; the same events are on disk as history."""
    space = workspace(tmp_path_factory.mktemp("e2e_reconcile"), stack.kafka, stack.redis, "rec")
    root, repo, prefix = space.root, space.repo, space.prefix
    assert usp("generate", "--repo", str(repo)).returncode == 0

    # Journeys that end by now: events from the future are refused by design.
    start = datetime.now(UTC) - timedelta(hours=3)
    config = TrafficConfig(users=60, seed=23, start=start, span=timedelta(hours=2))
    searches = [e for e in generate(config) if e.event_type == "search"]
    kinds = {e.kind for e in searches}
    assert {"malformed", "duplicate", "late"} <= kinds, kinds
    history = root / "history"
    write_history(searches, history)

    job = Job(repo, [root / "streaming" / "search.json"], root / "checkpoints", root / "job.log")
    job.start()
    client = SignalClient.from_repo(repo)
    valid = {e.payload["event_id"] for e in searches if e.kind != "malformed"}
    store = client.store

    def stored() -> int:
        ranges = {user: (0, 2**62) for user in store.entities("search")}
        return sum(len(events) for events in store.visible("search", ranges).values())

    offline = repo / "data" / "signals" / "search"
    days = days_between(start - timedelta(days=1), datetime.now(UTC) + timedelta(days=1))
    try:
        # The job reads the prefixed raw topic (copy_repo renamed it).
        topic = f"{prefix}events.search"
        produce_events(stack.kafka, [(topic, orjson.dumps(e.payload)) for e in searches])
        wait_for(
            lambda: stored() == len(valid), job, JOB_START_TIMEOUT, "every valid search stored"
        )
        wait_for(
            lambda: len(latest_offline_versions(offline, days, [])) == len(valid),
            job,
            60,
            "every valid search in the offline store",
        )
    finally:
        job.stop()
    yield {
        "repo": repo,
        "history": history,
        "start": (start - timedelta(days=1)).date().isoformat(),
        "end": (datetime.now(UTC) + timedelta(days=1)).date().isoformat(),
        "valid": valid,
        "malformed": sum(1 for e in searches if e.kind == "malformed"),
    }
    client.store.drop_project()


def reconcile(streamed: dict, source: str) -> tuple[int, dict]:
    result = usp(
        "reconcile", "search", "--repo", str(streamed["repo"]), "--source", source,
        "--start", streamed["start"], "--end", streamed["end"], "--json",
    )  # fmt: skip
    assert result.stdout, result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def test_the_backfill_computes_exactly_what_the_stream_wrote(streamed: dict) -> None:
    code, report = reconcile(streamed, str(streamed["history"] / "events.search"))
    assert report["differences"] == 0, report
    assert code == 0
    count = len(streamed["valid"])
    assert report["batch_rows"] == count
    assert report["rejected"] == streamed["malformed"]
    assert report["store"]["matched"] == report["store"]["compared"] == count
    assert report["offline"]["matched"] == report["offline"]["compared"] == count


def test_an_event_the_stream_never_saw_is_reported(streamed: dict, tmp_path) -> None:
    extra = {
        "event_id": "only-in-history",
        "event_ts": (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
        "user_id": 1,
        "query": "loft",
        "city": "Paris",
        "checkin": "2027-01-01",
        "checkout": "2027-01-03",
        "guests": 2,
    }
    # The real history plus one event.
    history = tmp_path / "history"
    shutil.copytree(streamed["history"], history)
    write_history([RawEvent("search", extra)], history)
    source = str(history / "events.search")
    code, report = reconcile(streamed, source)
    assert code == 1
    for side in ("store", "offline"):
        assert report[side]["missing_in_stream"] == 1
        assert report[side]["examples"][0]["event_id"] == "only-in-history"
        assert orjson.dumps(report[side]["examples"][0]["batch"])
