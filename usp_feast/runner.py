"""Start signal jobs on the local Flink mini-cluster: topics, environment, process.

The job itself is ``streaming/usp_job.py``; this module prepares what it needs (Kafka topics,
``JAVA_HOME``, generated configs) and runs it as a child process in its own process group, so
stopping ``usp run`` stops the JVM it started as well.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from usp_feast.definitions import Definitions
from usp_feast.jobs import render_job_configs

__all__ = [
    "RunnerError",
    "ensure_topics",
    "job_command",
    "job_environment",
    "run_foreground",
    "stale_files",
    "write_configs",
    "write_files",
    "write_prefixed_configs",
]

logger = logging.getLogger(__name__)

ENTRY_POINT = Path(__file__).resolve().parents[1] / "streaming" / "usp_job.py"


class RunnerError(RuntimeError):
    """A job cannot be started; the message says what to fix."""


def write_configs(definitions: Definitions, folder: Path) -> dict[Path, bool]:
    """Write every streaming job config into ``folder``; returns path → whether it changed."""
    return write_files(render_job_configs(definitions), folder)


def write_files(rendered: Mapping[str, str], folder: Path) -> dict[Path, bool]:
    """Write generated files (name → text) into ``folder``; returns path → whether it changed."""
    folder.mkdir(parents=True, exist_ok=True)
    changed = {}
    for name, text in rendered.items():
        path = folder / name
        old = path.read_text() if path.is_file() else None
        if old != text:
            path.write_text(text)
        changed[path] = old != text
    return changed


def write_prefixed_configs(definitions: Definitions, folder: Path, prefix: str) -> list[str]:
    """Write every job config with its platform topics and consumer group renamed ``<prefix>…``.

    The platform's topics (``usp.signal.*``, ``usp.dlq.*``, ``usp.segment.*``,
    ``usp.session.*``, ...) are shared by every job on a broker; prefixed, a test run's or
    benchmark's jobs read only what it produced. Raw source topics are the definitions' own and
    stay as they are. Returns every topic the jobs read or write, for creating them.
    """
    write_configs(definitions, folder)
    topics: list[str] = []
    for path in sorted(folder.glob("*.json")):
        config = json.loads(path.read_text())
        for key in (
            "signal_topic",
            "dead_letter_topic",
            "segment_topic",
            "session_topic",
            "late_topic",
        ):
            if key in config:
                config[key] = prefix + config[key]
                topics.append(config[key])
        config["consumer_group"] = prefix + config["consumer_group"]
        for source in config.get("inputs", []):
            source["topic"] = prefix + source["topic"]
        topics += [config[k] for k in ("source_topic", "left_topic", "right_topic") if k in config]
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return topics


def stale_files(rendered: Mapping[str, str], folder: Path) -> list[str]:
    """Generated files (name → text) that are missing from ``folder`` or differ there."""
    stale = []
    for name, text in rendered.items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            stale.append(str(path))
    return stale


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int = 1) -> None:
    """Create missing topics with ``partitions`` partitions (existing ones are left as they are)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from usp_feast.connections import ConnectionSettingsError, kafka_config

    try:
        admin = AdminClient(kafka_config(bootstrap))
    except ConnectionSettingsError as exc:  # a USP_KAFKA_* variable that cannot work
        raise RunnerError(str(exc)) from None
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise RunnerError(
            f"Kafka at {bootstrap} does not answer ({exc}); start it with `usp dev up` "
            "or set USP_KAFKA_BOOTSTRAP"
        ) from None
    for topic in dict.fromkeys(topics):
        if topic in existing and len(existing[topic].partitions) < partitions:
            # Not grown here: more partitions would move users to other partitions mid-stream.
            logger.warning(
                "topic %s has %d partition(s): only that many of %d parallel readers get data",
                topic,
                len(existing[topic].partitions),
                partitions,
            )
    # A topic asked for twice in one request makes some brokers answer with a bad message.
    wanted = [NewTopic(t, partitions, 1) for t in dict.fromkeys(topics) if t not in existing]
    for topic, future in admin.create_topics(wanted).items() if wanted else []:
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RunnerError(f"could not create topic {topic}: {exc}") from None


def job_environment() -> dict[str, str]:
    """The environment PyFlink needs: ``JAVA_HOME`` (found from ``java`` when unset)."""
    env = dict(os.environ)
    if not env.get("JAVA_HOME"):
        java = shutil.which("java")
        if java is None:
            raise RunnerError("Java 17 is required for Flink; run scripts/setup.sh to install it")
        env["JAVA_HOME"] = str(Path(java).resolve().parents[1])
    return env


def job_command(
    configs: Sequence[Path],
    repo: Path,
    checkpoints: Path | None = None,
    *,
    parallelism: int = 1,
    jobmanager: str | None = None,
) -> list[str]:
    """The command line that runs ``configs`` as one job.

    On a local mini-cluster, or submitted to the cluster whose REST endpoint is ``jobmanager``
    (``host:port``).
    """
    command = [sys.executable, str(ENTRY_POINT), "--repo", str(repo)]
    if checkpoints is not None:
        command += ["--checkpoints", str(checkpoints)]
    if parallelism != 1:
        command += ["--parallelism", str(parallelism)]
    if jobmanager is not None:
        command += ["--jobmanager", jobmanager]
    return command + [str(c) for c in configs]


def run_foreground(command: list[str], duration: float | None = None) -> int:
    """Run a job until it exits, ``duration`` passes or Ctrl-C; stops its whole group.

    Returns the job's exit code, or 0 when it was stopped here (the duration passed, Ctrl-C).
    """
    process = subprocess.Popen(command, env=job_environment(), start_new_session=True)
    deadline = None if duration is None else time.monotonic() + duration
    # The job leads its own process group, which a SIGTERM to this one does not reach: exit
    # through `finally` below so that it stops the job too.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        while process.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stopped_here = process.poll() is None
        if stopped_here:
            _stop_group(process)
        signal.signal(signal.SIGTERM, previous)
    return 0 if stopped_here else process.returncode


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    # The job's JVM is a child of the Python entry point: signal the whole group.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass
