"""`usp run` in the foreground: the exit code says whether the job failed or was stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from usp_feast.runner import run_foreground

pytestmark = pytest.mark.unit


def test_a_job_stopped_when_its_duration_passes_exits_0() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    assert run_foreground(sleeper, duration=0.5) == 0


def test_a_job_that_fails_on_its_own_passes_its_exit_code_on() -> None:
    failing = [sys.executable, "-c", "raise SystemExit(3)"]

    assert run_foreground(failing, duration=30) == 3


def test_a_sigterm_to_usp_run_stops_the_job_it_started(tmp_path) -> None:
    # `usp run` is stopped with SIGTERM by supervisors (systemd, a test harness): the job,
    # which leads a process group of its own, must not be left running.
    marker = tmp_path / "job.pid"
    job = tmp_path / "job.py"
    job.write_text(
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    starter = (
        "from usp_feast.runner import run_foreground; "
        f"run_foreground([{sys.executable!r}, {str(job)!r}])"
    )
    runner = subprocess.Popen([sys.executable, "-c", starter])
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    job_pid = int(marker.read_text())

    runner.send_signal(signal.SIGTERM)
    runner.wait(timeout=30)

    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)
