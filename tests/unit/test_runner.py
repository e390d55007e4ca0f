"""`usp run` in the foreground: the exit code says whether the job failed or was stopped."""

from __future__ import annotations

import sys

import pytest

from usp_feast.runner import run_foreground

pytestmark = pytest.mark.unit


def test_a_job_stopped_when_its_duration_passes_exits_0() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    assert run_foreground(sleeper, duration=0.5) == 0


def test_a_job_that_fails_on_its_own_passes_its_exit_code_on() -> None:
    failing = [sys.executable, "-c", "raise SystemExit(3)"]

    assert run_foreground(failing, duration=30) == 3
