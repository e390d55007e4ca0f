"""Fixtures for tests that talk to real services, started by the project's own dev stack.

Every test writes under its own Feast project name (a unique key prefix), so tests never touch
data they did not write, even on a Redis shared with the demo.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
import requests

from tests.redis_cluster import running_cluster
from usp_feast import devstack
from usp_feast.store import VersionedStore, connect

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def stack() -> devstack.StackEndpoints:
    """The local stack (Redis + Kafka-protocol broker), started if it is not running."""
    return devstack.up()


@pytest.fixture(scope="session")
def redis_url(stack: devstack.StackEndpoints) -> str:
    return stack.redis


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A Redis Cluster of three masters started for this test session, stopped after it."""
    with running_cluster() as cluster:
        yield cluster.url


# The store contract runs against every backend: the local stack's Redis, and a Redis Cluster
# (the `redis_type` values of the online store config).
BACKENDS = ["redis", "redis_cluster"]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> Iterator[VersionedStore]:
    """A versioned store under a project nobody else writes to; dropped afterwards."""
    cluster = request.param == "redis_cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    client = connect(url, cluster=cluster)
    versioned = VersionedStore(client, project=_unique("contract"))
    yield versioned
    versioned.drop_project()
    client.close()


def copy_repo(
    destination: Path,
    redis_url: str,
    project: str,
    topic_prefix: str = "",
    redis_type: str = "redis",
) -> Path:
    """A copy of the example repository wired to the test Redis under its own project.

    ``topic_prefix`` renames the raw topics (``events.x`` → ``<prefix>events.x``) so a test's
    jobs read only what the test produced; ``redis_type`` is the online store's (``redis`` or
    ``redis_cluster``).
    """
    repo = destination / "feature_repo"
    shutil.copytree(
        ROOT / "feature_repo",
        repo,
        ignore=shutil.ignore_patterns("data", "__pycache__"),
    )
    shutil.copytree(ROOT / "validation", destination / "validation")
    if topic_prefix:
        for definition in [*(repo / "signals").glob("*.yaml"), *(repo / "joins").glob("*.yaml")]:
            text = definition.read_text().replace("topic: events.", f"topic: {topic_prefix}events.")
            definition.write_text(text)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        "online_store:\n"
        "  type: usp_feast.online_store.VersionedRedisOnlineStore\n"
        f"  connection_string: {redis_url}\n"
        + (f"  redis_type: {redis_type}\n" if redis_type != "redis" else "")
        + "offline_store:\n"
        "  type: usp_feast.offline_store.PartitionedParquetOfflineStore\n"
        "entity_key_serialization_version: 3\n"
    )
    return repo


def feast_apply(repo: Path) -> None:
    """`feast apply` in ``repo``, as a user runs it; fails the test with Feast's error."""
    feast = Path(sys.executable).with_name("feast")
    result = subprocess.run(
        [str(feast), "apply"], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"feast apply failed:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="session")
def applied_repo(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Path]:
    """The example repository, copied under a unique project and applied with `feast apply`."""
    repo = copy_repo(tmp_path_factory.mktemp("repo"), redis_url, _unique("it"))
    feast_apply(repo)
    yield repo
    from usp_feast.query import SignalClient

    SignalClient.from_repo(repo).store.drop_project()


@pytest.fixture(scope="session")
def feature_store(applied_repo: Path):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(applied_repo))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(repo: Path, port: int) -> subprocess.Popen[bytes]:
    """`usp serve` as a real process; waits until it answers."""
    process = subprocess.Popen(
        [sys.executable, "-m", "usp_feast.cli", "serve", "--repo", str(repo), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"usp serve exited: {process.stderr.read().decode()[-2000:]}")
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("usp serve did not answer within 30 s")


def serving(repo: Path) -> Iterator[str]:
    """`usp serve` on a free port for the length of a fixture; yields its base URL."""
    port = free_port()
    process = start_server(repo, port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def http_get(url: str) -> requests.Response:
    """A GET with the tests' timeout."""
    return requests.get(url, timeout=5)


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def search_row(user: int, event_id: str, at: datetime, city: str, guests: int = 2) -> dict:
    """A valid row of the example ``search`` signal, as a push or the store takes it."""
    return {
        "user_id": user,
        "event_id": event_id,
        "event_ts": at,
        "query": f"stay in {city}",
        "city": city,
        "checkin": "2026-12-01",
        "checkout": "2026-12-04",
        "guests": guests,
    }
