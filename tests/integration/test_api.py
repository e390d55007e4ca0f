"""The HTTP API as a client sees it: `usp serve` runs as a real process on real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import copy_repo, free_port, http_get, serving, start_server

pytestmark = pytest.mark.integration

USER = 2001


@pytest.fixture(scope="module")
def api(applied_repo: Path, feature_store) -> Iterator[str]:
    now = datetime.now(UTC)
    rows = [
        {
            "user_id": USER,
            "event_id": f"h{i}",
            "event_ts": now - timedelta(minutes=i * 3),
            "listing_id": 100 + i,
            "city": "Rome",
            "price": 80.0 + i,
            "room_type": "entire_home",
        }
        for i in range(8)
    ]
    feature_store.push("view_push", pd.DataFrame(rows))
    yield from serving(applied_repo)


def test_recent_signals_newest_first_with_limit_and_window(api: str) -> None:
    body = http_get(f"{api}/v1/users/{USER}/signals/view?within=10m&limit=3").json()
    assert body["count"] == 3
    assert [e["event_id"] for e in body["events"]] == ["h0", "h1", "h2"]
    assert body["events"][0]["listing_id"] == 100
    assert body["events"][0]["event_ts"].endswith("Z")
    window = http_get(f"{api}/v1/users/{USER}/signals/view?within=10m").json()
    assert [e["event_id"] for e in window["events"]] == ["h0", "h1", "h2", "h3"]


def test_as_of_before_any_write_returns_nothing(api: str) -> None:
    body = http_get(f"{api}/v1/users/{USER}/signals/view?as_of=2020-01-01T00:00:00Z").json()
    assert body == {"user_id": USER, "signal": "view", "count": 0, "events": []}


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("limit=-1", 400, "limit must be an integer from 1 to 1000"),
        ("limit=0", 400, "limit must be an integer from 1 to 1000"),
        ("limit=1001", 400, "limit must be an integer from 1 to 1000"),
        ("limit=ten", 400, "limit must be an integer"),
        ("within=10mins", 400, "invalid duration '10mins'"),
        ("within=", 400, "invalid duration"),
        ("as_of=yesterday", 400, "as_of must be an ISO-8601 time"),
        ("as_of=2026-11-26T12:00:00", 400, "as_of must carry a timezone"),
        ("color=red", 400, "unknown query parameter 'color'"),
    ],
)
def test_bad_parameters_get_a_4xx_with_a_one_line_reason(
    api: str, query: str, status: int, words: str
) -> None:
    response = http_get(f"{api}/v1/users/{USER}/signals/view?{query}")
    assert response.status_code == status
    detail = response.json()["detail"]
    assert words in detail and "\n" not in detail


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        (f"/v1/users/{USER}/signals/clicks", 404, "unknown signal 'clicks'; known signals:"),
        ("/v1/users/abc/signals/view", 400, "user_id must be an integer"),
        ("/v1/users/-5/signals/view", 400, "user_id must be positive"),
        ("/v1/nothing", 404, "no such endpoint"),
    ],
)
def test_bad_paths_get_a_4xx_with_a_reason(api: str, path: str, status: int, words: str) -> None:
    response = http_get(f"{api}{path}")
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_healthz_and_metrics(api: str) -> None:
    assert http_get(f"{api}/healthz").json() == {"status": "ok", "redis": True}
    http_get(f"{api}/v1/users/{USER}/signals/view?limit=-1")
    text = http_get(f"{api}/metrics").text
    assert 'usp_http_requests_total{route="signals",status="400"}' in text
    assert 'usp_http_requests_total{route="signals",status="200"}' in text
    assert "usp_http_request_seconds_bucket" in text


def test_redis_down_is_a_503_not_a_500(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}"
    repo = copy_repo(tmp_path, dead, "nobody")
    port = free_port()
    process = start_server(repo, port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert http_get(f"{base}/healthz").status_code == 503
        response = http_get(f"{base}/v1/users/1/signals/view")
        assert response.status_code == 503
        assert "unavailable" in response.json()["detail"]
    finally:
        process.terminate()
        process.wait(timeout=10)
