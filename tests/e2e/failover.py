"""A failover drill: a steady event stream, a SIGKILLed TaskManager, and what readers see.

Shared by the cluster failover test and ``benchmarks/bench_failover.py``. Recovery time is
measured from the kill to the moment an event sent after the kill is readable on *every*
partition (a partition read by a surviving TaskManager never stops, so the slowest partition
is the one the killed TaskManager read).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from tests.e2e.harness import ts
from usp_feast import SignalClient, cluster
from usp_feast.kafka_io import producer
from usp_feast.metric_names import FLINK_RESTARTS


class SteadyStream:
    """Sends ``wishlist_add`` events at ``rate``/s round-robin over partitions and users.

    Every event id is unique; its send time and partition are kept for the drill once the
    broker has acknowledged it.
    """

    def __init__(
        self, kafka: str, topic: str, partitions: int, users: range, rate: float = 50
    ) -> None:
        self.topic, self.partitions, self.users, self.rate = topic, partitions, users, rate
        self.sender = producer(kafka)
        self.sent: dict[str, tuple[float, int]] = {}  # acknowledged id → (send time, partition)
        self.failed = 0  # sends the broker did not acknowledge
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyStream:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sender.flush(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            user = self.users[i % len(self.users)]
            partition = i % self.partitions
            event_id = f"s{i}"
            event = {"event_id": event_id, "event_ts": ts(0), "user_id": user, "listing_id": i + 1}
            self.sender.produce(
                self.topic,
                orjson.dumps(event),
                partition=partition,
                on_delivery=self._acknowledged(event_id, time.time(), partition),
            )
            self.sender.poll(0)
            i += 1
            self._stop.wait(1 / self.rate)

    def _acknowledged(self, event_id: str, sent_at: float, partition: int) -> Callable:
        # Only what the broker acknowledged counts as sent: the job cannot lose the rest.
        def record(error: Any, _: Any) -> None:
            if error is None:
                self.sent[event_id] = (sent_at, partition)
            else:
                self.failed += 1

        return record

    def visible(self, client: SignalClient) -> list[str]:
        """Event ids readers see now (duplicates kept, to be counted)."""
        return [
            event.event_id
            for user in self.users
            for event in client.recent(user, "wishlist", limit=1000)
        ]

    def flowing(self, client: SignalClient, since: float = 0.0) -> set[int]:
        """Partitions with an event sent after ``since`` that readers see now."""
        seen = set(self.visible(client))
        return {
            partition
            for event_id, (sent_at, partition) in list(self.sent.items())
            if sent_at > since and event_id in seen
        }

    def recovery_seconds(
        self,
        client: SignalClient,
        killed_at: float,
        timeout: float,
        check: Callable[[], None] = lambda: None,
    ) -> float:
        """Seconds from ``killed_at`` until every partition shows an event sent after it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            check()
            if len(self.flowing(client, killed_at)) == self.partitions:
                return time.time() - killed_at
            time.sleep(0.1)
        raise AssertionError(f"no partition-complete recovery within {timeout:.0f} s of the kill")


def placed(rest: str) -> set[str]:
    """The TaskManagers the running job's tasks are placed on (one job runs in a drill)."""
    return set().union(*cluster.busy_taskmanagers(rest).values())


def recovery_phases(rest: str, killed_at: float) -> dict[str, float | None]:
    """Where a recovery's time went, in seconds from the kill, from the JobManager's REST API.

    * ``detected_s``: the failure's entry in the job's exception history (a lost
      TaskManager is declared after the heartbeat timeout, or sooner when its connection drops);
    * ``initializing_s``: the last restarted task entered INITIALIZING (scheduled, deployed);
    * ``running_s``: ... and RUNNING, after its operators' ``open()``: the Python steps'
      imports and connections.

    What remains until the first record is readable is reading, processing and writing.
    """
    (job_id,) = cluster.busy_taskmanagers(rest)
    history = cluster.rest_get(rest, f"/jobs/{job_id}/exceptions?maxExceptions=20")
    failures = [e["timestamp"] / 1000 for e in history["exceptionHistory"]["entries"]]
    entered: dict[str, list[float]] = {"INITIALIZING": [], "RUNNING": []}
    for vertex in cluster.rest_get(rest, f"/jobs/{job_id}")["vertices"]:
        times = cluster.rest_get(rest, f"/jobs/{job_id}/vertices/{vertex['id']}/subtasktimes")
        for subtask in times["subtasks"]:
            for state, moments in entered.items():
                moment = subtask["timestamps"].get(state, 0) / 1000
                if moment >= killed_at:  # restarted after the kill (the rest kept running)
                    moments.append(moment)

    def since_kill(moments: list[float], pick: Any) -> float | None:
        return round(pick(moments) - killed_at, 2) if moments else None

    return {
        "detected_s": since_kill([f for f in failures if f >= killed_at], min),
        "initializing_s": since_kill(entered["INITIALIZING"], max),
        "running_s": since_kill(entered["RUNNING"], max),
    }


def restarts(metrics_url: str) -> float:
    """Flink's own count of a job's restarts, from its JobManager's reporter.

    That is the job's own process for a local job, the cluster's JobManager on a cluster.
    """
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    found = re.findall(rf"^{FLINK_RESTARTS}{{[^}}]*}} (\S+)$", text, re.MULTILINE)
    assert found, f"{FLINK_RESTARTS} is not exported"
    return float(found[0])


def kill(pid: int) -> float:
    """SIGKILL a TaskManager (no shutdown of any kind); returns when it was sent."""
    killed_at = time.time()
    os.kill(pid, signal.SIGKILL)
    return killed_at
