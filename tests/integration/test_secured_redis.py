"""A Redis that requires TLS and an ACL login, reached with credentials from the environment.

The module starts its own ``redis-server`` (Debian's, built with TLS) on a free port: TLS only
(``--port 0``), client certificates required, the ``default`` user off and one ACL user
``usp``. Its CA, server and client certificates are made here with ``openssl``. The password
and certificate paths are in the environment only (``USP_REDIS_*``); ``feature_store.yaml``
names the server as ``rediss://usp@127.0.0.1:${USP_TEST_TLS_PORT}``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis

from tests.conftest import copy_repo, feast_apply, free_port, http_get, search_row, serving
from usp_feast import devstack
from usp_feast.query import SignalClient
from usp_feast.store import StoreUnavailableError, VersionedStore, connect, now_micros
from usp_feast.versions import Record

pytestmark = pytest.mark.integration

PASSWORD = "tls-acl-pw-5d1c"
URL = "rediss://usp@127.0.0.1:${USP_TEST_TLS_PORT}"


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is not installed; run scripts/setup.sh"
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def make_certificates(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
        *("-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=usp test CA"),
        cwd=folder,
    )
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, subject, extensions in (
        ("server", "/CN=127.0.0.1", ["-extfile", "server.ext"]),
        ("client", "/CN=usp", []),
    ):
        _openssl(
            *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key"),
            *("-out", f"{name}.csr", "-subj", subject),
            cwd=folder,
        )
        _openssl(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "1", "-out", f"{name}.crt", *extensions),
            cwd=folder,
        )


@pytest.fixture(scope="module")
def tls_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("redis-tls")
    make_certificates(folder)
    return folder


@pytest.fixture(scope="module")
def secured_redis(tls_folder: Path) -> Iterator[int]:
    """``redis-server`` with TLS only and an ACL user, stopped at the end; yields its port."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; run scripts/setup.sh"
    port = free_port()
    log = tls_folder / "redis.log"
    process = subprocess.Popen(
        [
            binary,
            *("--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(tls_folder / "server.crt")),
            *("--tls-key-file", str(tls_folder / "server.key")),
            *("--tls-ca-cert-file", str(tls_folder / "ca.crt")),
            *("--tls-auth-clients", "yes"),
            *("--user", "default", "off"),
            *("--user", "usp", "on", f">{PASSWORD}", "~*", "&*", "+@all"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *("--dir", str(tls_folder), "--logfile", str(log)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(
            host="127.0.0.1",
            port=port,
            ssl=True,
            ssl_ca_certs=str(tls_folder / "ca.crt"),
            ssl_certfile=str(tls_folder / "client.crt"),
            ssl_keyfile=str(tls_folder / "client.key"),
            username="usp",
            password=PASSWORD,
        )
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, f"redis-server exited: {log.read_text()[-2000:]}"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, f"redis-server silent: {log.read_text()}"
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def secured_env(secured_redis: int, tls_folder: Path) -> Iterator[dict[str, str]]:
    """The module's environment: the password and certificate paths, the port for ``${...}``."""
    values = {
        "USP_TEST_TLS_PORT": str(secured_redis),
        "USP_REDIS_PASSWORD": PASSWORD,
        "USP_REDIS_TLS_CA": str(tls_folder / "ca.crt"),
        "USP_REDIS_TLS_CERT": str(tls_folder / "client.crt"),
        "USP_REDIS_TLS_KEY": str(tls_folder / "client.key"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield values


@pytest.fixture(scope="module")
def secured_repo(
    secured_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The example repository on the secured Redis, applied with `feast apply`."""
    repo = copy_repo(tmp_path_factory.mktemp("secured"), URL, f"tls_{uuid.uuid4().hex[:10]}")
    assert PASSWORD not in (repo / "feature_store.yaml").read_text()
    feast_apply(repo)
    yield repo
    SignalClient.from_repo(repo).store.drop_project()


def test_the_server_refuses_clients_without_the_credentials(
    secured_redis: int, tls_folder: Path
) -> None:
    # What the store's success below proves: without the settings, nothing gets through.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=secured_redis, socket_timeout=2).ping()
    anonymous = redis.Redis(
        host="127.0.0.1",
        port=secured_redis,
        ssl=True,
        ssl_ca_certs=str(tls_folder / "ca.crt"),
        ssl_certfile=str(tls_folder / "client.crt"),
        ssl_keyfile=str(tls_folder / "client.key"),
    )
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_the_store_writes_and_reads_with_settings_from_the_environment(
    secured_env: dict[str, str],
) -> None:
    client = connect(URL)
    assert client.acl_whoami() == "usp"
    store = VersionedStore(client, project=f"tls_{uuid.uuid4().hex[:10]}")
    try:
        record = Record("e1", event_ts=now_micros(), version=now_micros(), fields={"city": "Oslo"})
        assert store.append("search", [("42", record)]) == 1
        assert [r.fields["city"] for r in store.recent("search", "42")] == ["Oslo"]
    finally:
        store.drop_project()
        client.close()


def test_feast_and_the_query_api_serve_from_the_secured_redis(secured_repo: Path) -> None:
    from feast import FeatureStore

    user = 4242
    now = datetime.now(UTC)
    feature_store = FeatureStore(repo_path=str(secured_repo))
    feature_store.push(
        "search_push",
        pd.DataFrame(
            [
                search_row(user, "t1", now - timedelta(minutes=5), "Paris"),
                search_row(user, "t2", now - timedelta(minutes=1), "Rome"),
            ]
        ),
    )
    online = feature_store.get_online_features(
        features=["search:city", "search:event_id", "search_history:searches_24h"],
        entity_rows=[{"user_id": user}],
    ).to_dict()
    assert online["city"] == ["Rome"]
    assert online["event_id"] == ["t2"]
    # Query features read the history through their own client (connection string ${...} form).
    assert online["searches_24h"] == [2]

    client = SignalClient.from_repo(secured_repo)
    assert [e.event_id for e in client.recent(user, "search")] == ["t2", "t1"]

    # The HTTP API reads through its asyncio client, in a process of its own.
    api = serving(secured_repo)
    base = next(api)
    try:
        response = http_get(f"{base}/v1/users/{user}/signals/search")
        assert response.status_code == 200, response.text
        assert [e["event_id"] for e in response.json()["events"]] == ["t2", "t1"]
        assert http_get(f"{base}/healthz").json()["redis"] is True
    finally:
        next(api, None)


def test_feast_apply_keeps_the_password_out_of_the_repository(secured_repo: Path) -> None:
    written = [path for path in secured_repo.rglob("*") if path.is_file()]
    assert secured_repo / "data" / "registry.db" in written
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []
    # The registry keeps the connection string as written, ${...} and all.
    registry = (secured_repo / "data" / "registry.db").read_bytes()
    assert b"${USP_TEST_TLS_PORT}" in registry


def usp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_a_wrong_password_is_one_sentence_naming_the_variable(secured_repo: Path) -> None:
    result = usp("query", "1", "search", "--repo", str(secured_repo), env={})
    assert result.returncode == 0, result.stderr

    result = usp(
        "query", "1", "search", "--repo", str(secured_repo), env={"USP_REDIS_PASSWORD": "wrong"}
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Redis refused the login" in result.stderr
    assert "USP_REDIS_PASSWORD" in result.stderr
    assert "wrong" not in result.stderr

    # The library says the same to a caller (Feast's get_online_features among them).
    os.environ["USP_REDIS_PASSWORD"] = "wrong"
    try:
        store = SignalClient.from_repo(secured_repo).store
        with pytest.raises(StoreUnavailableError, match="USP_REDIS_PASSWORD"):
            store.recent("search", "1")
    finally:
        os.environ["USP_REDIS_PASSWORD"] = PASSWORD


def test_an_untrusted_server_certificate_names_the_ca_variable(
    secured_repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_certificates(other)
    result = usp(
        "query",
        "1",
        "search",
        "--repo",
        str(secured_repo),
        env={"USP_REDIS_TLS_CA": str(other / "ca.crt")},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "USP_REDIS_TLS_CA" in result.stderr


def test_the_dev_stack_checks_a_secured_redis_with_the_same_settings(
    secured_env: dict[str, str], tmp_path: Path
) -> None:
    url = f"rediss://usp@127.0.0.1:{secured_env['USP_TEST_TLS_PORT']}"
    stack = {
        "USP_REDIS_URL": url,
        "USP_KAFKA_BOOTSTRAP": devstack.endpoints().kafka,
        "USP_STATE_DIR": str(tmp_path / "state"),
    }
    result = usp("dev", "up", env=stack)
    assert result.returncode == 0, result.stderr
    assert f"redis  {url}" in result.stdout

    result = usp("dev", "up", env={**stack, "USP_REDIS_PASSWORD": "wrong"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "USP_REDIS_PASSWORD" in result.stderr
