"""The `usp` command line as a user runs it (real processes, real Redis)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration


def usp(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_dev_status_json_prints_the_endpoints(stack) -> None:
    result = usp("dev", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kafka"] == stack.kafka
    assert status["redis"] == stack.redis
    assert status["services"]["redis"]["running"] is True


def test_validate_reports_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    (signals / "a.yaml").write_text(
        "name: a\nowner: t\nsource: {topic: events.a}\nfields: {x: integer}\n"
        "transform: nowhere.Transform\nretention: 10mins\nvalidation: a\n"
    )
    (signals / "b.yaml").write_text("name: b\nowner: t\nretension: 1d\n")
    result = usp("validate", "--repo", str(tmp_path))
    assert result.returncode == 1
    err = result.stderr
    assert "signals/a.yaml:4: fields.x: unknown type 'integer'" in err
    assert "signals/a.yaml:6: retention: invalid duration '10mins'" in err
    assert "signals/b.yaml:3: retension: unknown key 'retension'; did you mean 'retention'?" in err
    assert "signals/b.yaml:1: source: required key is missing" in err
    assert "problems found" in err


def test_validate_accepts_the_example_repo() -> None:
    result = usp("validate", "--repo", str(Path(__file__).resolve().parents[2] / "feature_repo"))
    assert result.returncode == 0, result.stderr
    assert "definitions OK: 5 signals (1 join), 1 segment, 2 sessions" in result.stdout


def test_query_prints_a_table_and_json(applied_repo: Path, feature_store) -> None:
    now = datetime.now(UTC)
    feature_store.push(
        "wishlist_push",
        pd.DataFrame(
            [
                {
                    "user_id": 3001,
                    "event_id": "w1",
                    "event_ts": now - timedelta(minutes=3),
                    "listing_id": 11,
                },
                {
                    "user_id": 3001,
                    "event_id": "w2",
                    "event_ts": now - timedelta(minutes=1),
                    "listing_id": 12,
                },
            ]
        ),
    )
    table = usp("query", "3001", "wishlist", "--within", "10m", "--repo", str(applied_repo))
    assert table.returncode == 0, table.stderr
    assert "user 3001 · wishlist · 2 events" in table.stdout
    assert table.stdout.index("w2") < table.stdout.index("w1")
    lines = usp("query", "3001", "wishlist", "--json", "--limit", "1", "--repo", str(applied_repo))
    assert [json.loads(x)["listing_id"] for x in lines.stdout.splitlines()] == [12]


def test_query_errors_are_one_clear_line(applied_repo: Path) -> None:
    bad_signal = usp("query", "1", "clicks", "--repo", str(applied_repo))
    assert bad_signal.returncode == 1
    assert (
        "unknown signal 'clicks'; known signals: booking, search, view, wishlist"
        in bad_signal.stderr
    )
    bad_window = usp("query", "1", "search", "--within", "soon", "--repo", str(applied_repo))
    assert bad_window.returncode == 1 and "invalid duration 'soon'" in bad_window.stderr
    assert "Traceback" not in bad_signal.stderr + bad_window.stderr


def test_segments_and_members_commands(applied_repo: Path) -> None:
    from usp_feast.feast_sink import SegmentSink
    from usp_feast.segments import iso_ms
    from usp_feast.store import now_micros

    now = now_micros() // 1000
    SegmentSink(applied_repo, "active_trip_planner").write(
        [
            {
                "segment": "active_trip_planner",
                "user_id": "3101",
                "change": "entered",
                "event_id": "s1",
                "event_ts": iso_ms(now),
                "in_segment": True,
                "entered_at": now,
                "expires_at": now + 3_600_000,
                "reason": "trigger search",
            }
        ]
    )

    lines = usp("segments", "3101", "--json", "--repo", str(applied_repo))
    assert lines.returncode == 0, lines.stderr
    [membership] = [json.loads(line) for line in lines.stdout.splitlines()]
    assert (membership["segment"], membership["in_segment"]) == ("active_trip_planner", True)
    table = usp("segments", "3101", "--repo", str(applied_repo))
    assert "active_trip_planner" in table.stdout and "yes" in table.stdout

    listing = usp("members", "active_trip_planner", "--limit", "1000", "--repo", str(applied_repo))
    assert listing.returncode == 0, listing.stderr
    assert any(line.startswith("3101\t") for line in listing.stdout.splitlines())

    unknown = usp("members", "nope", "--repo", str(applied_repo))
    assert unknown.returncode == 1 and "unknown segment 'nope'" in unknown.stderr
    bad_at = usp("segments", "3101", "--at", "noon", "--repo", str(applied_repo))
    assert bad_at.returncode == 1 and "--at:" in bad_at.stderr
    assert "Traceback" not in unknown.stderr + bad_at.stderr


def test_query_shows_a_users_current_and_closed_sessions(applied_repo: Path) -> None:
    from usp_feast.engagements import Engagement, session_payload
    from usp_feast.feast_sink import EngagementSink
    from usp_feast.store import now_micros

    now = now_micros() // 1000
    minute = 60_000
    open_now = Engagement(
        now - minute, now, now + 30 * minute, {"events": 2, "top_cities": [["Oslo", 2]]}
    )
    earlier = Engagement(
        now - 90 * minute, now - 80 * minute, now - 50 * minute, {"events": 5}, closed=True
    )
    EngagementSink(applied_repo, "browse_session").write(
        [
            {
                "user_id": "3201",
                "current": session_payload(open_now),
            },
            {"closed": earlier.to_row("browse_session", 3201)},
        ]
    )

    result = usp("query", "3201", "browse_session", "--json", "--repo", str(applied_repo))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "session" and report["current"]["values"]["events"] == 2
    assert [r["values"]["events"] for r in report["recent"]] == [5]

    table = usp("query", "3201", "browse_session", "--repo", str(applied_repo))
    assert table.returncode == 0, table.stderr
    assert "browse_session (session)" in table.stdout and "current" in table.stdout
