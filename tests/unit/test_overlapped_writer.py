"""The streaming job's store writer: one write in flight, in order, errors surface."""

from __future__ import annotations

import threading
import time

import pytest

from usp_feast.feast_sink import OverlappedWriter

pytestmark = pytest.mark.unit


def test_writes_land_in_submission_order_and_settle_waits_for_them() -> None:
    written: list[list[int]] = []

    def slow_write(rows: list[int]) -> None:
        time.sleep(0.01)
        written.append(rows)

    writer = OverlappedWriter(slow_write)
    for n in range(5):
        writer.submit([n])
    writer.settle()
    assert written == [[0], [1], [2], [3], [4]]
    writer.close()


def test_the_caller_runs_while_a_write_is_in_flight_but_never_two_writes() -> None:
    release = threading.Event()
    started: list[list[int]] = []

    def blocked_write(rows: list[int]) -> None:
        started.append(rows)
        release.wait(5)

    writer = OverlappedWriter(blocked_write)
    writer.submit([1])  # returns while the write is blocked
    second = threading.Thread(target=writer.submit, args=([2],))
    second.start()
    second.join(0.2)
    assert second.is_alive(), "a second submit must wait for the write in flight"
    assert started == [[1]]
    release.set()
    second.join(5)
    writer.close()
    assert started == [[1], [2]]


def test_a_failed_write_is_raised_to_the_caller_on_the_next_call() -> None:
    def failing_write(rows: list[int]) -> None:
        raise RuntimeError("store rejected the batch")

    writer = OverlappedWriter(failing_write)
    writer.submit([1])
    with pytest.raises(RuntimeError, match="store rejected the batch"):
        writer.settle()
    writer.close()


def test_an_empty_batch_writes_nothing() -> None:
    calls: list[list[int]] = []
    writer = OverlappedWriter(calls.append)
    writer.submit([])
    writer.close()
    assert calls == []
