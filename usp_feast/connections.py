"""How clients reach a secured Redis and Kafka: credentials and TLS from the environment.

Passwords and certificate paths belong to the machine a client runs on, not to a repository:
they are read from environment variables each time a client is built, and never from, or into,
a definition, ``feature_store.yaml`` or a generated file (job configs, backfill configs,
monitoring files, the Feast registry), so those can be committed and shared.

Redis (every redis-py client of the package takes its options from :func:`redis_options`):
    USP_REDIS_USERNAME: The ACL user, when the connection string names none
        (``rediss://usp@redis.internal:6380`` names it in the URL instead).
    USP_REDIS_PASSWORD: That user's password (or the ``requirepass`` of ``default``).
    USP_REDIS_TLS_CA: CA certificates (PEM) that signed the server's certificate, instead of the
        system's; TLS itself is chosen by a ``rediss://`` connection string.
    USP_REDIS_TLS_CERT, USP_REDIS_TLS_KEY: Client certificate and key (PEM), for a server that
        asks clients for one (``tls-auth-clients``).

Kafka (every confluent-kafka client of the package is built with :func:`kafka_config`, and the
Flink jobs' Kafka sources and sinks get :func:`kafka_java_properties`):
    USP_KAFKA_SECURITY_PROTOCOL: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or
        ``SASL_SSL``.
    USP_KAFKA_SASL_MECHANISM: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL protocols).
    USP_KAFKA_SASL_USERNAME, USP_KAFKA_SASL_PASSWORD: The SASL credentials.
    USP_KAFKA_SSL_CA_LOCATION: CA certificates (PEM) that signed the brokers' certificates.
    USP_KAFKA_SSL_CERTIFICATE_LOCATION, USP_KAFKA_SSL_KEY_LOCATION: Client certificate and key
        (PEM) for brokers that authenticate clients by certificate; Flink's Java client reads
        both from one file, so point both variables at a file holding the two.
    USP_KAFKA_SSL_KEY_PASSWORD: Password of an encrypted client key.

A setting that cannot work (a SASL mechanism without a user, TLS files with a ``redis://`` URL,
an unknown protocol) raises :class:`ConnectionSettingsError` naming the variable to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "KAFKA_CA_LOCATION",
    "KAFKA_CERTIFICATE_LOCATION",
    "KAFKA_KEY_LOCATION",
    "KAFKA_KEY_PASSWORD",
    "KAFKA_MECHANISMS",
    "KAFKA_PROTOCOLS",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SECURITY_PROTOCOL",
    "REDIS_PASSWORD",
    "REDIS_TLS_CA",
    "REDIS_TLS_CERT",
    "REDIS_TLS_KEY",
    "REDIS_USERNAME",
    "SECRET_VARIABLES",
    "ConnectionSettingsError",
    "KafkaSecurity",
    "expand_variables",
    "kafka_config",
    "kafka_java_properties",
    "kafka_table_options",
    "redis_options",
    "redis_problem",
    "resolve_redis_url",
]

REDIS_USERNAME = "USP_REDIS_USERNAME"
REDIS_PASSWORD = "USP_REDIS_PASSWORD"
REDIS_TLS_CA = "USP_REDIS_TLS_CA"
REDIS_TLS_CERT = "USP_REDIS_TLS_CERT"
REDIS_TLS_KEY = "USP_REDIS_TLS_KEY"

KAFKA_SECURITY_PROTOCOL = "USP_KAFKA_SECURITY_PROTOCOL"
KAFKA_SASL_MECHANISM = "USP_KAFKA_SASL_MECHANISM"
KAFKA_SASL_USERNAME = "USP_KAFKA_SASL_USERNAME"
KAFKA_SASL_PASSWORD = "USP_KAFKA_SASL_PASSWORD"
KAFKA_CA_LOCATION = "USP_KAFKA_SSL_CA_LOCATION"
KAFKA_CERTIFICATE_LOCATION = "USP_KAFKA_SSL_CERTIFICATE_LOCATION"
KAFKA_KEY_LOCATION = "USP_KAFKA_SSL_KEY_LOCATION"
KAFKA_KEY_PASSWORD = "USP_KAFKA_SSL_KEY_PASSWORD"

SECRET_VARIABLES = (REDIS_PASSWORD, KAFKA_SASL_PASSWORD, KAFKA_KEY_PASSWORD)
"""Variables holding secrets: read when a client is built, never written anywhere."""

KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# The Java login module of each SASL mechanism (kafka-clients, as Flink's connector loads it).
KAFKA_MECHANISMS = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConnectionSettingsError(ValueError):
    """A connection setting cannot work; the message names the variable or value to fix."""


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _value(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None


def _file(environ: Mapping[str, str], name: str) -> str | None:
    path = _value(environ, name)
    if path is not None and not Path(path).is_file():
        raise ConnectionSettingsError(f"{name} names {path}, which is not a readable file")
    return path


def expand_variables(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with ``${VAR}`` replaced by the variable's value, as Feast reads its YAML.

    Args:
        text: A connection string such as ``rediss://usp@${REDIS_HOST}:6380``.
        environ: The environment (default ``os.environ``).

    Raises:
        ConnectionSettingsError: A ``${VAR}`` names an unset variable.

    Example:
        >>> expand_variables("redis://${HOST}:6379", {"HOST": "10.0.0.7"})
        'redis://10.0.0.7:6379'

    """
    env = _env(environ)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConnectionSettingsError(
                f"the connection string {text!r} uses ${{{name}}}, but {name} is not set; "
                "export it before starting"
            )
        return env[name]

    return _VARIABLE.sub(value, text)


def resolve_redis_url(url: str, environ: Mapping[str, str] | None = None) -> str:
    """A connection string as redis-py takes it: ``${VAR}`` expanded, ``redis://`` if bare.

    Example:
        >>> resolve_redis_url("127.0.0.1:16379")
        'redis://127.0.0.1:16379'

    """
    url = expand_variables(url.strip(), environ)
    return url if "://" in url else f"redis://{url}"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=user + host))


def redis_options(url: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The redis-py client options, beyond the URL, with the environment's credentials and TLS.

    Args:
        url: The connection string (after :func:`resolve_redis_url`).
        environ: The environment (default ``os.environ``).

    Raises:
        ConnectionSettingsError: Naming the variable of a setting that cannot work.

    Example:
        >>> redis_options("rediss://usp@10.0.0.7:6380", {"USP_REDIS_PASSWORD": "s3cret"})
        {'password': 's3cret', 'ssl_check_hostname': True}

    """
    env = _env(environ)
    parts = urlsplit(url)
    shown = _without_password(url)
    options: dict[str, Any] = {}
    username = _value(env, REDIS_USERNAME)
    if username is not None:
        if parts.username and unquote(parts.username) != username:
            raise ConnectionSettingsError(
                f"{REDIS_USERNAME} is {username!r}, but the connection string {shown} names "
                f"the user {parts.username!r}; name the user in one place"
            )
        options["username"] = username
    password = _value(env, REDIS_PASSWORD)
    if password is not None:
        # A URL composed from the variable (rediss://:$(USP_REDIS_PASSWORD)@host) agrees with it.
        if parts.password and unquote(parts.password) != password:
            raise ConnectionSettingsError(
                f"{REDIS_PASSWORD} is set, and the connection string {shown} carries another "
                f"password; keep the password out of the connection string"
            )
        options["password"] = password
    files = {name: _file(env, name) for name in (REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY)}
    given = [name for name, path in files.items() if path is not None]
    if parts.scheme != "rediss":
        if given:
            raise ConnectionSettingsError(
                f"{given[0]} is set, but the connection string {shown} does not use TLS; "
                "write it as rediss://host:port"
            )
        return options
    if (files[REDIS_TLS_CERT] is None) != (files[REDIS_TLS_KEY] is None):
        missing = REDIS_TLS_KEY if files[REDIS_TLS_KEY] is None else REDIS_TLS_CERT
        raise ConnectionSettingsError(
            f"{missing} is not set: a client certificate needs both {REDIS_TLS_CERT} "
            f"and {REDIS_TLS_KEY}"
        )
    if files[REDIS_TLS_CA] is not None:
        options["ssl_ca_certs"] = files[REDIS_TLS_CA]
    if files[REDIS_TLS_CERT] is not None:
        options["ssl_certfile"] = files[REDIS_TLS_CERT]
        options["ssl_keyfile"] = files[REDIS_TLS_KEY]
    # redis-py 5 does not check that the certificate names the host unless asked; a
    # `?ssl_check_hostname=false` in the URL still turns it off (e.g. cluster nodes by IP).
    options["ssl_check_hostname"] = True
    return options


def redis_problem(exc: BaseException) -> str | None:
    """One sentence naming the setting to fix, for a Redis error a setting causes; else None.

    A refused login points at the password and user variables, an untrusted or mismatched
    server certificate at the TLS variables.
    """
    import redis

    if isinstance(exc, redis.AuthenticationError):
        return (
            f"Redis refused the login ({exc}); check {REDIS_PASSWORD} and the ACL user "
            f"({REDIS_USERNAME}, or the user in the connection string)"
        )
    text = str(exc)
    if isinstance(exc, redis.ConnectionError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"Redis's TLS certificate is not trusted ({text}); point {REDIS_TLS_CA} at the CA "
            "that signed it"
        )
    if isinstance(exc, redis.ConnectionError) and "WRONG_VERSION_NUMBER" in text:
        return (
            f"the Redis server did not answer TLS ({text}); use redis:// for a plain port, "
            "rediss:// for a TLS one"
        )
    return None


# --- Kafka ----------------------------------------------------------------------------------------


def _jaas_quoted(value: str) -> str:
    # The JAAS parser (java.io.StreamTokenizer) reads backslash escapes inside double quotes.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class KafkaSecurity:
    """How Kafka clients authenticate and encrypt, validated; built by :meth:`from_env`.

    Example:
        >>> security = KafkaSecurity.from_env({
        ...     "USP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        ...     "USP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        ...     "USP_KAFKA_SASL_USERNAME": "usp",
        ...     "USP_KAFKA_SASL_PASSWORD": "s3cret",
        ... })
        >>> security.librdkafka()["sasl.mechanism"]
        'SCRAM-SHA-512'
        >>> jaas = security.java_properties()["sasl.jaas.config"]
        >>> for part in jaas.split(" required "):
        ...     print(part)
        org.apache.kafka.common.security.scram.ScramLoginModule
        username="usp" password="s3cret";

    """

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The settings of the ``USP_KAFKA_*`` variables (all unset: plaintext, no login).

        Raises:
            ConnectionSettingsError: Naming the variable of a setting that cannot work.

        """
        env = _env(environ)
        protocol = (_value(env, KAFKA_SECURITY_PROTOCOL) or "PLAINTEXT").upper()
        if protocol not in KAFKA_PROTOCOLS:
            raise ConnectionSettingsError(
                f"{KAFKA_SECURITY_PROTOCOL} is {env[KAFKA_SECURITY_PROTOCOL]!r}; use one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"
            )
        sasl = protocol.startswith("SASL_")
        tls = protocol.endswith("SSL")
        mechanism = _value(env, KAFKA_SASL_MECHANISM)
        username = _value(env, KAFKA_SASL_USERNAME)
        password = _value(env, KAFKA_SASL_PASSWORD)
        if not sasl:
            given = [
                name
                for name, value in (
                    (KAFKA_SASL_MECHANISM, mechanism),
                    (KAFKA_SASL_USERNAME, username),
                    (KAFKA_SASL_PASSWORD, password),
                )
                if value is not None
            ]
            if given:
                raise ConnectionSettingsError(
                    f"{given[0]} is set, but {KAFKA_SECURITY_PROTOCOL} is {protocol}, which "
                    "does not log in; set it to SASL_SSL (or SASL_PLAINTEXT)"
                )
        else:
            if mechanism is None:
                raise ConnectionSettingsError(
                    f"{KAFKA_SASL_MECHANISM} is not set, but {KAFKA_SECURITY_PROTOCOL} is "
                    f"{protocol}; set it to one of {', '.join(KAFKA_MECHANISMS)}"
                )
            mechanism = mechanism.upper()
            if mechanism not in KAFKA_MECHANISMS:
                raise ConnectionSettingsError(
                    f"{KAFKA_SASL_MECHANISM} is {env[KAFKA_SASL_MECHANISM]!r}; use one of "
                    f"{', '.join(KAFKA_MECHANISMS)}"
                )
            for name, value in ((KAFKA_SASL_USERNAME, username), (KAFKA_SASL_PASSWORD, password)):
                if value is None:
                    raise ConnectionSettingsError(
                        f"{name} is not set, but {KAFKA_SASL_MECHANISM} is {mechanism}, which "
                        "logs in with a user name and password"
                    )
        files = {
            name: _file(env, name)
            for name in (KAFKA_CA_LOCATION, KAFKA_CERTIFICATE_LOCATION, KAFKA_KEY_LOCATION)
        }
        key_password = _value(env, KAFKA_KEY_PASSWORD)
        given = [name for name, path in files.items() if path is not None]
        if key_password is not None:
            given.append(KAFKA_KEY_PASSWORD)
        if given and not tls:
            raise ConnectionSettingsError(
                f"{given[0]} is set, but {KAFKA_SECURITY_PROTOCOL} is {protocol}, which does "
                "not use TLS; set it to SSL (or SASL_SSL)"
            )
        certificate, key = files[KAFKA_CERTIFICATE_LOCATION], files[KAFKA_KEY_LOCATION]
        if (certificate is None) != (key is None):
            missing = KAFKA_KEY_LOCATION if key is None else KAFKA_CERTIFICATE_LOCATION
            raise ConnectionSettingsError(
                f"{missing} is not set: a client certificate needs both "
                f"{KAFKA_CERTIFICATE_LOCATION} and {KAFKA_KEY_LOCATION}"
            )
        return cls(
            protocol=protocol,
            mechanism=mechanism if sasl else None,
            username=username,
            password=password,
            ca_location=files[KAFKA_CA_LOCATION],
            certificate_location=certificate,
            key_location=key,
            key_password=key_password,
        )

    def librdkafka(self) -> dict[str, str]:
        """The settings as confluent-kafka (librdkafka) configuration; empty for plaintext."""
        if self.protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": self.protocol}
        if self.mechanism is not None:
            config["sasl.mechanism"] = self.mechanism
            config["sasl.username"] = self.username or ""
            config["sasl.password"] = self.password or ""
        if self.ca_location is not None:
            config["ssl.ca.location"] = self.ca_location
        if self.certificate_location is not None and self.key_location is not None:
            config["ssl.certificate.location"] = self.certificate_location
            config["ssl.key.location"] = self.key_location
        if self.key_password is not None:
            config["ssl.key.password"] = self.key_password
        return config

    def java_properties(self) -> dict[str, str]:
        """The settings as Java Kafka client properties (Flink's Kafka source and sink).

        Raises:
            ConnectionSettingsError: The client certificate and key are in two files (the Java
                client reads them from one).

        """
        if self.protocol == "PLAINTEXT":
            return {}
        properties = {"security.protocol": self.protocol}
        if self.mechanism is not None:
            properties["sasl.mechanism"] = self.mechanism
            properties["sasl.jaas.config"] = (
                f"{KAFKA_MECHANISMS[self.mechanism]} required "
                f"username={_jaas_quoted(self.username or '')} "
                f"password={_jaas_quoted(self.password or '')};"
            )
        if self.ca_location is not None:
            properties["ssl.truststore.type"] = "PEM"
            properties["ssl.truststore.location"] = self.ca_location
        if self.certificate_location is not None:
            if self.certificate_location != self.key_location:
                raise ConnectionSettingsError(
                    f"Flink's Kafka client reads the client certificate and its key from one PEM "
                    f"file, but {KAFKA_CERTIFICATE_LOCATION} and {KAFKA_KEY_LOCATION} name two; "
                    "concatenate them (certificate, then PKCS#8 key) and point both at it"
                )
            properties["ssl.keystore.type"] = "PEM"
            properties["ssl.keystore.location"] = self.certificate_location
        if self.key_password is not None:
            properties["ssl.key.password"] = self.key_password
        return properties


def kafka_config(
    bootstrap: str,
    settings: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A confluent-kafka client configuration: ``bootstrap``, ``settings``, then the security.

    The environment's security settings come last, so no ``settings`` entry overrides them.

    Args:
        bootstrap: The bootstrap servers, ``host:port[,host:port...]``.
        settings: Further librdkafka settings, e.g. ``{"group.id": "g"}``.
        environ: The environment (default ``os.environ``).

    Raises:
        ConnectionSettingsError: Naming the variable of a setting that cannot work.

    Example:
        >>> kafka_config("127.0.0.1:19092", {"group.id": "g"}, environ={})
        {'bootstrap.servers': '127.0.0.1:19092', 'group.id': 'g'}

    """
    return {
        "bootstrap.servers": bootstrap,
        **(settings or {}),
        **KafkaSecurity.from_env(environ).librdkafka(),
    }


def kafka_java_properties(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment's Kafka security as Java client properties (for Flink's connector)."""
    return KafkaSecurity.from_env(environ).java_properties()


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def kafka_table_options(environ: Mapping[str, str] | None = None) -> str:
    """The environment's Kafka security as options of a Flink SQL Kafka table, as DDL lines.

    Each line is ``'properties.<key>' = '<value>',`` (quotes doubled inside the value); empty
    for a plaintext Kafka. Read when a job is built, so no secret enters a generated file.

    Example:
        >>> print(kafka_table_options({"USP_KAFKA_SECURITY_PROTOCOL": "SSL"}).strip())
        'properties.security.protocol' = 'SSL',

    """
    return "".join(
        f"\n          {_sql_string('properties.' + key)} = {_sql_string(value)},"
        for key, value in kafka_java_properties(environ).items()
    )
