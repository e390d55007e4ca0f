"""What the end-to-end tests share: a job process group, waiting, event times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from usp_feast.definitions import Definitions
from usp_feast.runner import job_command, job_environment, write_configs

JOB_START_TIMEOUT = 180


class Job:
    """One `streaming/usp_job.py` process group running the given job configs as one job."""

    def __init__(self, repo: Path, configs: list[Path], checkpoints: Path, log: Path) -> None:
        self.command = job_command(configs, repo, checkpoints)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=job_environment(),
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


def write_isolated_configs(definitions: Definitions, folder: Path, prefix: str) -> list[str]:
    """Generate the job configs with every platform topic and group renamed ``<prefix>usp.…``.

    The platform's own topics (``usp.signal.*``, ``usp.dlq.*``, ``usp.segment.*``) are shared
    by every run on the broker (the demo, benchmarks); prefixed, a test's jobs read only what
    the test produced. Returns every topic the jobs use, for creating them.
    """
    write_configs(definitions, folder)
    topics: list[str] = []
    for path in sorted(folder.glob("*.json")):
        config = json.loads(path.read_text())
        for key in ("signal_topic", "dead_letter_topic", "segment_topic", "late_topic"):
            if key in config:
                config[key] = prefix + config[key]
                topics.append(config[key])
        config["consumer_group"] = prefix + config["consumer_group"]
        for source in config.get("inputs", []):
            source["topic"] = prefix + source["topic"]
        if "source_topic" in config:
            topics.append(config["source_topic"])
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return topics
