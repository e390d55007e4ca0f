"""The HTTP API with API keys and a rate limit configured: `usp serve` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, start_server

pytestmark = pytest.mark.integration

READER = "reader-secret-0123456789"
OPS = "ops-secret-abcdefghijklmn"
KEYS = f"ranker={READER}:users.read;oncall={OPS}:users.read,ops.read"


@pytest.fixture(scope="module")
def secured(applied_repo: Path) -> Iterator[str]:
    before = {name: os.environ.get(name) for name in ("USP_API_KEYS", "USP_API_RATE_LIMIT")}
    os.environ["USP_API_KEYS"] = KEYS
    os.environ["USP_API_RATE_LIMIT"] = "5/s"
    port = free_port()
    try:
        process = start_server(applied_repo, port)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def get(url: str, key: str | None = None, bearer: bool = True) -> requests.Response:
    headers = {}
    if key is not None:
        headers = {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}
    return requests.get(url, headers=headers, timeout=5)


def test_no_key_is_a_401_that_says_how_to_send_one(secured: str) -> None:
    answer = get(f"{secured}/v1/users/1/signals/search")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="usp"'
    assert "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'" in answer.json()["detail"]
    assert get(f"{secured}/v1/users/1/signals/search", "wrong-key-0123456789").status_code == 401


def test_a_key_reads_what_its_scopes_allow_and_nothing_else(secured: str) -> None:
    assert get(f"{secured}/v1/users/1/signals/search", READER).status_code == 200
    assert get(f"{secured}/v1/users/1/segments", READER, bearer=False).status_code == 200
    for path in ("/v1/jobs", "/metrics"):
        refused = get(f"{secured}{path}", READER)
        assert refused.status_code == 403, path
        assert refused.json()["detail"] == "API key 'ranker' lacks the scope 'ops.read'"
        assert get(f"{secured}{path}", OPS).status_code == 200, path
    members = get(f"{secured}/v1/segments/active_trip_planner/members", OPS)
    assert members.json()["detail"] == "API key 'oncall' lacks the scope 'segments.read'"


def test_health_and_the_explorer_page_need_no_key(secured: str) -> None:
    assert get(f"{secured}/healthz").status_code == 200
    page = get(f"{secured}/explorer/")
    assert page.status_code == 200 and "Signals explorer" in page.text


def test_each_client_is_rate_limited_on_its_own(secured: str) -> None:
    url = f"{secured}/v1/users/1/signals/search"
    statuses = [get(url, READER).status_code for _ in range(12)]
    assert statuses[0] == 200 and 429 in statuses
    limited = get(url, READER)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "5 requests/s for ranker" in limited.json()["detail"]
    # The other key still has its budget.
    assert get(url, OPS).status_code == 200


def test_bad_key_configuration_stops_serve_with_a_clear_error(applied_repo: Path) -> None:
    env = {**os.environ, "USP_API_KEYS": "ranker=tooshort:users.read"}
    done = subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", "serve", "--repo", str(applied_repo)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "USP_API_KEYS entry 1 (ranker): the secret is shorter than 16 characters" in (
        done.stderr
    )
    assert "tooshort" not in done.stderr
