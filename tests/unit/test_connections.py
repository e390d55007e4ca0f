"""Redis and Kafka connection settings from the environment: the mapping and its errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer

from usp_feast.connections import (
    ConnectionSettingsError,
    KafkaSecurity,
    expand_variables,
    kafka_config,
    kafka_java_properties,
    kafka_table_options,
    redis_options,
    redis_problem,
    resolve_redis_url,
)
from usp_feast.store import AsyncRecentReader, connect

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

SCRAM = {
    "USP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "USP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "USP_KAFKA_SASL_USERNAME": "usp",
    "USP_KAFKA_SASL_PASSWORD": "s3cret",
}


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A file standing for a PEM bundle (only its existence is checked before connecting)."""
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


# --- Kafka ----------------------------------------------------------------------------------------


def test_nothing_set_is_plaintext_with_no_extra_settings() -> None:
    assert KafkaSecurity.from_env({}).protocol == "PLAINTEXT"
    assert kafka_config("b:9092", {"group.id": "g"}, environ={}) == {
        "bootstrap.servers": "b:9092",
        "group.id": "g",
    }
    assert kafka_java_properties({}) == {}
    assert kafka_table_options({}) == ""


def test_sasl_ssl_with_scram_maps_to_librdkafka_and_java(pem: Path) -> None:
    env = {**SCRAM, "USP_KAFKA_SSL_CA_LOCATION": str(pem)}

    assert kafka_config("b:9092", environ=env) == {
        "bootstrap.servers": "b:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "usp",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(pem),
    }
    assert kafka_java_properties(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="usp" password="s3cret";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pem),
    }


def test_plain_uses_the_plain_login_module_and_values_are_case_insensitive() -> None:
    env = {
        "USP_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
        "USP_KAFKA_SASL_MECHANISM": "plain",
        "USP_KAFKA_SASL_USERNAME": "usp",
        "USP_KAFKA_SASL_PASSWORD": "pw",
    }
    java = kafka_java_properties(env)
    assert java["security.protocol"] == "SASL_PLAINTEXT"
    assert java["sasl.jaas.config"].startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
    )
    assert kafka_config("b:1", environ=env)["sasl.mechanism"] == "PLAIN"


def test_quotes_and_backslashes_are_escaped_for_jaas_and_sql() -> None:
    env = {**SCRAM, "USP_KAFKA_SASL_PASSWORD": "a\"b\\c'd"}

    jaas = kafka_java_properties(env)["sasl.jaas.config"]
    assert jaas.endswith('password="a\\"b\\\\c\'d";')
    # In the Flink DDL every single quote of a value is doubled.
    assert "'properties.sasl.jaas.config' = 'org.apache" in kafka_table_options(env)
    assert "password=\"a\\\"b\\\\c''d\";'," in kafka_table_options(env)


def test_flink_table_options_list_every_java_property() -> None:
    lines = kafka_table_options(SCRAM).strip().splitlines()
    assert [line.strip().split(" = ")[0] for line in lines] == [
        "'properties.security.protocol'",
        "'properties.sasl.mechanism'",
        "'properties.sasl.jaas.config'",
    ]
    assert all(line.rstrip().endswith("',") for line in lines)


def test_a_client_certificate_in_one_file_serves_both_clients(pem: Path) -> None:
    env = {
        "USP_KAFKA_SECURITY_PROTOCOL": "SSL",
        "USP_KAFKA_SSL_CERTIFICATE_LOCATION": str(pem),
        "USP_KAFKA_SSL_KEY_LOCATION": str(pem),
        "USP_KAFKA_SSL_KEY_PASSWORD": "keypw",
    }
    config = kafka_config("b:1", environ=env)
    assert config["ssl.certificate.location"] == config["ssl.key.location"] == str(pem)
    assert config["ssl.key.password"] == "keypw"
    java = kafka_java_properties(env)
    assert java["ssl.keystore.type"] == "PEM"
    assert java["ssl.keystore.location"] == str(pem)
    assert java["ssl.key.password"] == "keypw"
    assert "sasl.mechanism" not in java


def test_a_client_certificate_and_key_in_two_files_are_refused_for_flink(
    pem: Path, tmp_path: Path
) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    env = {
        "USP_KAFKA_SECURITY_PROTOCOL": "SSL",
        "USP_KAFKA_SSL_CERTIFICATE_LOCATION": str(pem),
        "USP_KAFKA_SSL_KEY_LOCATION": str(key),
    }
    assert kafka_config("b:1", environ=env)["ssl.key.location"] == str(key)
    with pytest.raises(ConnectionSettingsError, match="USP_KAFKA_SSL_CERTIFICATE_LOCATION"):
        kafka_java_properties(env)


@pytest.mark.parametrize(
    ("env", "variable", "hint"),
    [
        ({"USP_KAFKA_SECURITY_PROTOCOL": "TLS"}, "USP_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ({"USP_KAFKA_SASL_MECHANISM": "PLAIN"}, "USP_KAFKA_SASL_MECHANISM", "PLAINTEXT"),
        ({"USP_KAFKA_SASL_PASSWORD": "x"}, "USP_KAFKA_SASL_PASSWORD", "does not log in"),
        (
            {**SCRAM, "USP_KAFKA_SASL_MECHANISM": ""},
            "USP_KAFKA_SASL_MECHANISM",
            "SCRAM-SHA-256",
        ),
        ({**SCRAM, "USP_KAFKA_SASL_MECHANISM": "GSSAPI"}, "USP_KAFKA_SASL_MECHANISM", "PLAIN"),
        ({**SCRAM, "USP_KAFKA_SASL_USERNAME": ""}, "USP_KAFKA_SASL_USERNAME", "SCRAM-SHA-512"),
        ({**SCRAM, "USP_KAFKA_SASL_PASSWORD": ""}, "USP_KAFKA_SASL_PASSWORD", "password"),
        (
            {**SCRAM, "USP_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
            "USP_KAFKA_SSL_CA_LOCATION",
            "/nonexistent/ca.pem",
        ),
        (
            {"USP_KAFKA_SSL_KEY_PASSWORD": "x"},
            "USP_KAFKA_SSL_KEY_PASSWORD",
            "does not use TLS",
        ),
    ],
    ids=[
        "unknown-protocol",
        "mechanism-without-sasl",
        "password-without-sasl",
        "sasl-without-mechanism",
        "unknown-mechanism",
        "sasl-without-username",
        "sasl-without-password",
        "missing-ca-file",
        "tls-setting-without-tls",
    ],
)
def test_settings_that_cannot_work_name_the_variable(
    env: dict[str, str], variable: str, hint: str
) -> None:
    with pytest.raises(ConnectionSettingsError) as caught:
        KafkaSecurity.from_env(env)
    message = str(caught.value)
    assert message.startswith(variable), message
    assert hint in message
    assert "\n" not in message


def test_a_certificate_without_its_key_names_the_missing_variable(pem: Path) -> None:
    env = {"USP_KAFKA_SECURITY_PROTOCOL": "SSL", "USP_KAFKA_SSL_CERTIFICATE_LOCATION": str(pem)}
    with pytest.raises(ConnectionSettingsError, match=r"^USP_KAFKA_SSL_KEY_LOCATION is not set"):
        KafkaSecurity.from_env(env)


def test_passwords_stay_out_of_the_settings_repr() -> None:
    assert "s3cret" not in repr(KafkaSecurity.from_env(SCRAM))


def test_librdkafka_accepts_every_setting_it_is_given(pem: Path) -> None:
    # librdkafka checks names and values when a client is built (no broker is contacted here).
    env = {
        **SCRAM,
        "USP_KAFKA_SSL_CA_LOCATION": str(pem),
        "USP_KAFKA_SSL_CERTIFICATE_LOCATION": str(pem),
        "USP_KAFKA_SSL_KEY_LOCATION": str(pem),
    }
    config = kafka_config("127.0.0.1:9", environ=env)
    # The PEM files are placeholders: pass the CA/cert checks by leaving them out here.
    for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
        config.pop(key)
    Producer(config).flush(0)
    bad = {**config, "sasl.mechanism": "NOT-A-MECHANISM"}
    with pytest.raises(Exception, match="Unsupported SASL mechanism"):
        Producer(bad)


def test_every_confluent_client_of_the_package_is_configured_through_kafka_config() -> None:
    """Only connections.py builds a librdkafka config (devstack probes its own plaintext broker)."""
    allowed = {"usp_feast/connections.py", "usp_feast/devstack.py"}
    offenders = []
    for path in sorted((ROOT / "usp_feast").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == "bootstrap.servers":
                if name not in allowed:
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == [], "build confluent-kafka configs with connections.kafka_config"


# --- Redis ----------------------------------------------------------------------------------------


def test_urls_are_expanded_and_get_a_scheme() -> None:
    env = {"REDIS_HOST": "10.0.0.7"}
    assert resolve_redis_url("${REDIS_HOST}:6379", env) == "redis://10.0.0.7:6379"
    assert (
        resolve_redis_url("rediss://usp@${REDIS_HOST}:6380/0", env)
        == "rediss://usp@10.0.0.7:6380/0"
    )
    # A bare `$` (say, in a password someone put in the URL) is left alone.
    assert expand_variables("redis://:pa$word@h:1", {}) == "redis://:pa$word@h:1"


def test_an_unset_variable_in_a_url_is_named() -> None:
    with pytest.raises(ConnectionSettingsError, match=r"\$\{REDIS_HOST\}, but REDIS_HOST is not"):
        resolve_redis_url("redis://${REDIS_HOST}:6379", {})


def test_redis_credentials_and_tls_files_come_from_the_environment(
    pem: Path, tmp_path: Path
) -> None:
    key = tmp_path / "client.key"
    key.write_text("key")
    env = {
        "USP_REDIS_USERNAME": "usp",
        "USP_REDIS_PASSWORD": "s3cret",
        "USP_REDIS_TLS_CA": str(pem),
        "USP_REDIS_TLS_CERT": str(pem),
        "USP_REDIS_TLS_KEY": str(key),
    }
    assert redis_options("rediss://10.0.0.7:6380", env) == {
        "username": "usp",
        "password": "s3cret",
        "ssl_ca_certs": str(pem),
        "ssl_certfile": str(pem),
        "ssl_keyfile": str(key),
        "ssl_check_hostname": True,
    }
    assert redis_options("redis://h:1", {}) == {}
    assert redis_options("rediss://h:1", {}) == {"ssl_check_hostname": True}
    # The user named in the URL and by the variable may agree; so may a composed password.
    credentials = {"USP_REDIS_USERNAME": "usp", "USP_REDIS_PASSWORD": "s3cret"}
    assert redis_options("redis://usp:s3cret@h:1", credentials) == {
        "username": "usp",
        "password": "s3cret",
    }


@pytest.mark.parametrize(
    ("url", "env", "variable", "hint"),
    [
        ("redis://h:1", {"USP_REDIS_TLS_CA": "{pem}"}, "USP_REDIS_TLS_CA", "rediss://"),
        ("rediss://h:1", {"USP_REDIS_TLS_CA": "/nonexistent.pem"}, "USP_REDIS_TLS_CA", "file"),
        ("rediss://h:1", {"USP_REDIS_TLS_CERT": "{pem}"}, "USP_REDIS_TLS_KEY", "both"),
        ("redis://admin@h:1", {"USP_REDIS_USERNAME": "usp"}, "USP_REDIS_USERNAME", "'admin'"),
        ("redis://:zq9x@h:1", {"USP_REDIS_PASSWORD": "pw"}, "USP_REDIS_PASSWORD", "another"),
    ],
    ids=["tls-file-plain-url", "missing-ca", "cert-without-key", "two-users", "two-passwords"],
)
def test_redis_settings_that_cannot_work_name_the_variable(
    url: str, env: dict[str, str], variable: str, hint: str, pem: Path
) -> None:
    env = {name: value.replace("{pem}", str(pem)) for name, value in env.items()}
    with pytest.raises(ConnectionSettingsError) as caught:
        redis_options(url, env)
    message = str(caught.value)
    assert message.startswith(variable), message
    assert hint in message
    assert "zq9x" not in message  # a password in the URL is masked


def test_connect_and_the_async_reader_use_the_environment(
    monkeypatch: pytest.MonkeyPatch, pem: Path
) -> None:
    monkeypatch.setenv("USP_REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("USP_REDIS_TLS_CA", str(pem))
    monkeypatch.setenv("REDIS_PORT", "6380")
    # Clients connect lazily: building them contacts no server.
    client = connect("rediss://usp@127.0.0.1:${REDIS_PORT}")
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["port"]) == ("usp", "s3cret", 6380)
    assert kwargs["ssl_ca_certs"] == str(pem)
    assert kwargs["ssl_check_hostname"] is True
    # The URL may turn the host name check off (cluster nodes reached by IP).
    unchecked = connect("rediss://usp@127.0.0.1:6380?ssl_check_hostname=false")
    assert unchecked.connection_pool.connection_kwargs["ssl_check_hostname"] is False
    # Options the caller passes win over the environment's.
    assert connect("rediss://h:1", password="other").connection_pool.connection_kwargs[
        "password"
    ] == ("other")
    reader = AsyncRecentReader("rediss://usp@127.0.0.1:6380", project="p")
    kwargs = reader.client.connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["ssl_ca_certs"]) == ("s3cret", str(pem))
    monkeypatch.delenv("USP_REDIS_TLS_CA")
    with pytest.raises(ConnectionSettingsError, match="USP_REDIS_TLS_CERT"):
        monkeypatch.setenv("USP_REDIS_TLS_CERT", str(pem))
        connect("rediss://h:1")


def test_a_refused_login_names_the_password_variable() -> None:
    problem = redis_problem(redis.AuthenticationError("invalid username-password pair"))
    assert problem is not None
    assert "USP_REDIS_PASSWORD" in problem and "USP_REDIS_USERNAME" in problem
    untrusted = redis.ConnectionError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "USP_REDIS_TLS_CA" in (redis_problem(untrusted) or "")
    assert redis_problem(redis.ConnectionError("Connection refused")) is None
