"""Kafka clients log in with SASL when the environment says so (usp_feast.connections).

The module runs a noida-db broker of its own (the local stack's broker, ``devstack.BROKERS``) on a
free port and reads its activity log, which lists every request, ``SaslHandshake`` and
``SaslAuthenticate`` included. noida-db offers SASL ``PLAIN`` but accepts any user name and
password (and has no users to configure, nor a TLS listener), so these tests show that the
package's clients, confluent-kafka and Flink's Java client, speak SASL with the settings of the
environment; that a wrong password is refused cannot be shown on this broker (docs/security.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from usp_feast import devstack
from usp_feast.kafka_io import consume_all, produce_events
from usp_feast.runner import ensure_topics

pytestmark = pytest.mark.integration

SASL = {
    "USP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "USP_KAFKA_SASL_MECHANISM": "PLAIN",
    "USP_KAFKA_SASL_USERNAME": "usp",
    # Quotes and a backslash: the Java client parses them out of its JAAS line.
    "USP_KAFKA_SASL_PASSWORD": 'pw"with\\quote',
}


class Broker:
    """A noida-db broker on a free port, in its own data folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.command = devstack.BROKERS["noida-db"](self.port, folder)
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def activity(self) -> list[str]:
        """The request names the broker logged, oldest first."""
        result = subprocess.run(
            [self.command[0], "activity", "--data-dir", str(self.folder)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return [line.split()[-1] for line in result.stdout.splitlines() if " kafka " in line]

    def logins(self) -> int:
        return self.activity().count("SaslAuthenticate")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = Broker(tmp_path_factory.mktemp("noida-sasl"))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert started.process.poll() is None, "noida-db exited at start"
            try:
                ensure_topics(started.bootstrap, ["usp.sasl.ready"])
                break
            except Exception:
                assert time.monotonic() < deadline, "noida-db did not answer within 30 s"
                time.sleep(0.2)
        yield started
    finally:
        started.stop()


def test_confluent_clients_log_in_with_sasl_from_the_environment(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = f"usp.sasl.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, [topic])  # plaintext: the settings are not set yet
    assert broker.logins() == 0

    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    ensure_topics(broker.bootstrap, [f"{topic}.admin"])
    after_admin = broker.logins()
    assert after_admin >= 1

    assert produce_events(broker.bootstrap, [(topic, b"one"), (topic, b"two")]) == 2
    after_producer = broker.logins()
    assert after_producer > after_admin
    assert list(consume_all(broker.bootstrap, topic, idle_seconds=1.0, timeout=30)) == [
        b"one",
        b"two",
    ]
    assert broker.logins() > after_producer


JAVA_CLIENT = """
import sys
from pyflink.java_gateway import get_gateway
from pyflink.util.java_utils import add_jars_to_context_class_loader
from usp_feast.connections import kafka_java_properties
from usp_feast.flink import jar_paths

gateway = get_gateway()
add_jars_to_context_class_loader([path.as_uri() for path in jar_paths()])
properties = gateway.jvm.java.util.Properties()
properties.setProperty("bootstrap.servers", sys.argv[1])
for key, value in kafka_java_properties().items():
    properties.setProperty(key, value)
admin = gateway.jvm.org.apache.kafka.clients.admin.AdminClient.create(properties)
seconds = gateway.jvm.java.util.concurrent.TimeUnit.SECONDS
print(sorted(admin.listTopics().names().get(20, seconds)))
admin.close()
"""


def test_flinks_java_client_logs_in_with_the_same_settings(broker: Broker) -> None:
    """The properties the Flink Kafka source and sink get, in kafka-clients (the job's jar)."""
    before = broker.logins()
    result = subprocess.run(
        [sys.executable, "-c", JAVA_CLIENT, broker.bootstrap],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SASL},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usp.sasl.ready" in result.stdout
    assert broker.logins() > before
