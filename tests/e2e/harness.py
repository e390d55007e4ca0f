"""What the end-to-end tests share: a prepared repository, a job process group, waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import copy_repo, feast_apply
from usp_feast.definitions import load_definitions
from usp_feast.runner import ensure_topics, job_command, job_environment, write_prefixed_configs

JOB_START_TIMEOUT = 180


@dataclass(frozen=True)
class Workspace:
    """A test's own copy of the example repository: applied, configs written, topics made."""

    root: Path
    repo: Path
    streaming: Path
    prefix: str  # of every Kafka topic the copy reads and writes
    run: str


def workspace(
    root: Path,
    kafka: str,
    redis: str,
    name: str,
    edit: Callable[[Path], None] | None = None,
    partitions: int = 1,
) -> Workspace:
    """Copy the example repository under ``root`` (project ``e2e_<name>_<run>``), ``edit`` it,
    apply it with Feast, write its job configs to ``root/streaming`` and create its topics
    (with ``partitions`` partitions each).

    Its own project and topic prefix keep it apart from other tests and from the demo's data.
    """
    run = uuid.uuid4().hex[:8]
    prefix = f"t{run}."
    repo = copy_repo(root, redis, f"e2e_{name}_{run}", topic_prefix=prefix)
    if edit is not None:
        edit(repo)
    feast_apply(repo)
    streaming = root / "streaming"
    topics = write_prefixed_configs(load_definitions(repo), streaming, prefix)
    ensure_topics(kafka, topics, partitions)
    return Workspace(root, repo, streaming, prefix, run)


class Job:
    """One `streaming/usp_job.py` process group running the given job configs as one job."""

    def __init__(
        self,
        repo: Path,
        configs: list[Path],
        checkpoints: Path,
        log: Path,
        env: dict[str, str] | None = None,
        parallelism: int = 1,
        jobmanager: str | None = None,
        command: list[str] | None = None,
    ) -> None:
        """``command`` replaces the job entry point's (e.g. ``usp run --cluster ...``)."""
        self.command = command or job_command(
            configs, repo, checkpoints, parallelism=parallelism, jobmanager=jobmanager
        )
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**job_environment(), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"the job exited with {self.process.returncode}:\n{tail}")


def wait_for(condition: Callable[[], bool], job: Job, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.check_alive()
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def ts(minutes_ago: float) -> str:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
