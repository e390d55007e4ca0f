"""The backfill as a user runs it: `usp history`, `usp backfill`, `usp reconcile` on real parts.

Raw history comes from the traffic generator (malformed, duplicate and late events included)
written as Parquet; the backfill writes real Redis (the versioned store, read back through the
Python client and Feast) and Parquet (read back through `get_historical_features`). What every
run must produce is worked out independently from the generator's own events and their kinds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore

from tests.conftest import ROOT, copy_repo, feast_apply
from usp_feast import SignalClient
from usp_feast.offline import part_files
from usp_feast.traffic import TrafficConfig, generate

pytestmark = pytest.mark.integration

USERS = 150
SEED = 11
DAYS = 6


def usp(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict]:
    """A copied example repository with generated configs and six days of raw history."""
    run = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("backfill")
    repo = copy_repo(root, stack.redis, f"it_backfill_{run}")
    feast_apply(repo)
    assert usp("generate", "--repo", str(repo)).returncode == 0
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=DAYS), today
    made = usp(
        "history", "--repo", str(repo), "--users", str(USERS), "--seed", str(SEED),
        "--start", start.date().isoformat(), "--end", end.date().isoformat(),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    config = TrafficConfig(users=USERS, seed=SEED, start=start, span=end - start)
    client = SignalClient.from_repo(repo)
    yield {
        "repo": repo,
        "start": start,
        "end": end,
        "events": list(generate(config)),
        "client": client,
    }
    client.store.drop_project()


def window(history: dict) -> list[str]:
    return [
        "--start",
        history["start"].date().isoformat(),
        "--end",
        history["end"].date().isoformat(),
    ]


def expected(history: dict, event_type: str) -> dict[str, dict]:
    """Event id → payload of the valid events of a type: what the signal must hold."""
    rows: dict[str, dict] = {}
    for event in history["events"]:
        if event.event_type == event_type and event.kind != "malformed":
            rows[event.payload["event_id"]] = event.payload
    return rows


def malformed(history: dict, event_type: str) -> int:
    return sum(1 for e in history["events"] if e.event_type == event_type and e.kind == "malformed")


def stored_versions(history: dict, view: str) -> int:
    store = history["client"].store
    return sum(store.client.zcard(store.key(view, user)) for user in store.entities(view))


def backfill(history: dict, name: str, *extra: str) -> dict:
    result = usp(
        "backfill", name, "--repo", str(history["repo"]), *window(history), "--json", *extra
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_backfill_writes_every_valid_event_to_store_and_offline(history: dict) -> None:
    searches = expected(history, "search")
    summary = backfill(history, "search")
    assert summary["rows"] == len(searches)
    assert summary["rejected"] == malformed(history, "search") > 0
    assert summary["read"] == sum(1 for e in history["events"] if e.event_type == "search")
    assert summary["store_versions"] == summary["offline_rows"] == len(searches)

    # The versioned store: a user's history is exactly their valid searches.
    client = history["client"]
    user = next(iter(searches.values()))["user_id"]
    mine = sorted(k for k, p in searches.items() if p["user_id"] == user)
    got = client.recent(user, "search", limit=1000)
    assert sorted(r.event_id for r in got) == mine

    # Rejects: one row per malformed event, each with its reason; GE's report per unit.
    work = history["repo"] / "data" / "backfill" / "search"
    rejects = pq.read_table(work / "rejects").to_pylist()
    assert len(rejects) == summary["rejected"]
    assert all(r["reason"] and r["original"] for r in rejects)
    reports = sorted((work / "reports").glob("*.html"))
    assert len(reports) == summary["units"]
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", reports[0].read_text()))
    assert "Expectation Suite: search" in text and "Unsuccessful Expectations" in text

    # The offline store, through Feast: point-in-time values of a few events.
    sample = sorted(searches.values(), key=lambda p: p["event_id"])[:: max(1, len(searches) // 20)]
    entity_df = pd.DataFrame(
        {
            "user_id": [p["user_id"] for p in sample],
            "event_timestamp": pd.to_datetime([p["event_ts"] for p in sample], utc=True),
        }
    )
    frame = (
        FeatureStore(repo_path=str(history["repo"]))
        .get_historical_features(entity_df, features=["search:event_id", "search:city"])
        .to_df()
    )
    answers = {(r.user_id, r.event_timestamp): r.event_id for r in frame.itertuples()}
    for payload in sample:
        # The newest valid search of the user at that instant (ties: any of them).
        moment = pd.Timestamp(payload["event_ts"])
        candidates = [
            p for p in searches.values()
            if p["user_id"] == payload["user_id"] and pd.Timestamp(p["event_ts"]) <= moment
        ]  # fmt: skip
        newest = max(pd.Timestamp(p["event_ts"]) for p in candidates)
        allowed = {p["event_id"] for p in candidates if pd.Timestamp(p["event_ts"]) == newest}
        assert answers[(payload["user_id"], moment)] in allowed


def test_a_second_run_changes_nothing_a_reader_sees(history: dict) -> None:
    backfill(history, "wishlist")
    versions = stored_versions(history, "wishlist")
    offline = part_files(history["repo"] / "data" / "signals" / "wishlist")
    assert versions == len(expected(history, "wishlist_add"))

    again = backfill(history, "wishlist")
    assert again["skipped_units"] == again["units"] and again["read"] == 0

    # Redone from scratch through the deployable entry point: nothing new to write.
    repo = history["repo"]
    entry = [
        sys.executable,
        str(ROOT / "backfill" / "usp_backfill.py"),
        str(repo.parent / "backfill" / "wishlist.json"),
    ]
    result = subprocess.run(
        [*entry, "--repo", str(repo), *window(history), "--fresh", "--no-report"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    redone = json.loads(result.stdout)
    assert redone["rows"] == len(expected(history, "wishlist_add"))
    assert redone["store_versions"] == redone["offline_rows"] == 0
    assert stored_versions(history, "wishlist") == versions
    assert part_files(history["repo"] / "data" / "signals" / "wishlist") == offline

    result = usp("reconcile", "wishlist", "--repo", str(history["repo"]), *window(history))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 missing in stream, 0 missing in batch, 0 different" in result.stdout


def test_a_killed_run_resumes_where_it_stopped(history: dict) -> None:
    repo = history["repo"]
    state = repo / "data" / "backfill" / "view" / "state.json"
    command = [sys.executable, "-m", "usp_feast.cli", "backfill", "view", "--repo", str(repo)]
    process = subprocess.Popen(
        [*command, *window(history), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["done"]:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    finished = set(json.loads(state.read_text())["done"])

    resumed = backfill(history, "view")
    assert resumed["skipped_units"] == len(finished) < resumed["units"]
    # Everything once: no event lost, and no duplicate versions from the unit redone.
    views = expected(history, "listing_view")
    assert stored_versions(history, "view") == len(views)
    result = usp("reconcile", "view", "--repo", str(repo), *window(history), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["differences"] == 0, report
    assert report["store"]["matched"] == report["offline"]["matched"] == len(views)


BUGGY = '''
class BookingTransform(SignalTransform):
    """A bug: the total counts every night twice."""

    def transform(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        nights, price = int(event["nights"]), float(event["price"])
        return {"listing_id": int(event["listing_id"]), "nights": nights, "price": price,
                "total": round(2 * nights * price, 2)}
'''


def test_a_correction_adds_versions_and_as_of_reads_still_see_the_old_values(
    history: dict,
) -> None:
    repo = history["repo"]
    transforms = repo / "transforms" / "__init__.py"
    fixed = transforms.read_text()
    transforms.write_text(fixed + BUGGY)  # the later class wins: the buggy one runs
    first = backfill(history, "booking", "--no-report")
    before_fix = datetime.now(UTC)
    transforms.write_text(fixed)
    corrected = backfill(history, "booking", "--no-report")

    bookings = expected(history, "booking")
    assert first["store_versions"] == len(bookings) > 0
    # Every total changed, so every event gets a second version (and a second offline row).
    assert corrected["skipped_units"] == 0
    assert corrected["store_versions"] == corrected["offline_rows"] == len(bookings)
    client = history["client"]
    payload = next(iter(bookings.values()))
    true_total = round(payload["nights"] * payload["price"], 2)

    def total(**kwargs) -> float:
        events = client.recent(payload["user_id"], "booking", limit=100, **kwargs)
        return next(e for e in events if e.event_id == payload["event_id"]).fields["total"]

    assert total(as_of=before_fix) == round(2 * payload["nights"] * payload["price"], 2)
    assert total() == true_total
    # Training sets see the corrected row: the newest created_ts wins a tie in event time.
    entity_df = pd.DataFrame(
        {
            "user_id": [payload["user_id"]],
            "event_timestamp": [pd.Timestamp(payload["event_ts"]) + pd.Timedelta(microseconds=1)],
        }
    )
    frame = (
        FeatureStore(repo_path=str(repo))
        .get_historical_features(entity_df, features=["booking:total", "booking:event_id"])
        .to_df()
    )
    # A user books at most once, so the newest booking at that instant is this one.
    assert frame["event_id"].tolist() == [payload["event_id"]]
    assert frame["total"].tolist() == [true_total]


def test_bad_requests_get_a_clear_error(history: dict, tmp_path: Path) -> None:
    repo = str(history["repo"])
    unknown = usp("backfill", "nope", "--repo", repo, *window(history))
    assert unknown.returncode != 0 and "no backfill config" in unknown.stderr
    joined = usp("backfill", "wishlist_enriched", "--repo", repo, *window(history))
    assert joined.returncode != 0 and "no backfill config" in joined.stderr
    empty = usp("backfill", "search", "--repo", repo, *window(history), "--source", str(tmp_path))
    assert empty.returncode != 0 and "no Parquet files" in empty.stderr
    backwards = usp(
        "backfill", "search", "--repo", repo, "--start", "2026-11-02", "--end", "2026-11-01"
    )
    assert backwards.returncode != 0 and "is not after start" in backwards.stderr
    zoneless = usp(
        "backfill", "search", "--repo", repo, "--start", "2026-11-01T10:00", "--end", "2026-11-02"
    )
    assert zoneless.returncode != 0 and "needs a timezone" in zoneless.stderr
