"""Failover on a real standalone Flink cluster (``usp_feast.cluster``), with events flowing.

A signal job runs with parallelism 2 over a 2-partition topic on two TaskManagers; a third,
the standby, stays registered with a free slot. One busy TaskManager is SIGKILLed mid-stream:
the job must move to the standby, the supervisor must start a replacement, and readers must
then see every event exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.failover import SteadyStream, kill, placed, recovery_phases, restarts
from tests.e2e.harness import JOB_START_TIMEOUT, Job, wait_for, workspace
from usp_feast import SignalClient, cluster
from usp_feast.job_status import JobMonitor, parse_metrics, running_jobs

pytestmark = pytest.mark.e2e


def _usp(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("usp")), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"usp {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def flink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict]]:
    """A cluster started as a user starts it, in a state folder of its own."""
    state = tmp_path_factory.mktemp("usp-state")
    env = {"USP_STATE_DIR": str(state), "USP_FLINK_REST_PORT": str(free_port())}
    out = _usp("cluster", "up", "--taskmanagers", "2", "--standby", "1", env=env)
    assert "parallelism 2, 1 standby" in out
    folder = state / "cluster"
    record = cluster.info(folder)
    assert record is not None
    yield folder, record["rest"], env
    assert _usp("cluster", "down", env=env).strip() == "cluster stopped"
    assert cluster.info(folder) is None
    assert "no cluster runs" in _usp("cluster", "status", env=env)


def _serving(state: Path) -> set[str]:
    """The registered job's metrics endpoints that answer with its series."""
    (record,) = running_jobs(state)
    answering = set()
    for url in record.metrics_urls:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if parse_metrics(response.read().decode(), 0.0, record.job).counters:
                    answering.add(url)
    return answering


def _events_per_s(monitor: JobMonitor) -> float:
    """The job's read rate over two samples, from every TaskManager that serves."""
    monitor.sample()
    time.sleep(2)
    (health,) = monitor.sample()
    assert health.running, health.error
    (pipeline,) = health.pipelines
    return pipeline.events_per_s or 0.0


def test_the_cluster_starts_every_taskmanager_with_the_standby_free(
    flink: tuple[Path, str, dict],
) -> None:
    folder, _, env = flink
    state = json.loads(_usp("cluster", "status", "--json", env=env))
    assert (state["slots_total"], state["slots_available"], state["jobs_running"]) == (3, 3, 0)
    assert sorted(state["taskmanagers"]) == sorted(cluster.taskmanagers(folder))


def test_a_killed_taskmanager_fails_over_to_the_standby_and_nothing_is_lost(
    flink: tuple[Path, str, dict], stack, tmp_path: Path
) -> None:
    folder, rest, env = flink
    space = workspace(tmp_path, stack.kafka, stack.redis, "failover", partitions=2)
    # Submitted as a user does: `usp run --cluster` (parallelism: every working slot).
    usp_run = [str(Path(sys.executable).with_name("usp")), "run", "--cluster", "wishlist"]
    job = Job(
        space.repo,
        [],
        tmp_path / "checkpoints",
        tmp_path / "job.log",
        env=env,
        command=[*usp_run, "--repo", str(space.repo), "--streaming", str(space.streaming)],
    )
    job.start()
    client = SignalClient.from_repo(space.repo)
    stream = SteadyStream(stack.kafka, f"{space.prefix}events.wishlist_add", 2, range(700, 720))
    try:
        with stream:
            # Steady state: both pipelines placed (one per TaskManager, the standby idle) and
            # events flowing on both partitions. A pipeline may still be deploying when the
            # other's first events are readable.
            wait_for(
                lambda: len(stream.flowing(client)) == 2 and len(placed(rest)) == 2,
                job,
                JOB_START_TIMEOUT,
                "both pipelines placed and flowing",
            )
            hosts = placed(rest)
            # The job's own metrics, served by the TaskManagers that run it (not the standby).
            state = Path(env["USP_STATE_DIR"])
            monitor = JobMonitor(state)
            serving = _serving(state)
            assert len(serving) == 2
            assert _events_per_s(monitor) > 0
            standby = set(cluster.taskmanagers(folder)) - hosts
            assert standby <= cluster.warm_taskmanagers(folder), "the standby starts cold"
            time.sleep(3)  # let checkpoints complete while events flow
            victim = sorted(hosts)[0]
            killed_at = kill(cluster.taskmanagers(folder)[victim])
            seconds = stream.recovery_seconds(client, killed_at, JOB_START_TIMEOUT, job.check_alive)
            phases = recovery_phases(rest, killed_at)
            print(f"recovered {seconds:.1f} s after SIGKILL of {victim}: {phases}")
            # The JobManager saw the loss, then restarted the lost tasks, in that order.
            detected, running = phases["detected_s"], phases["running_s"]
            assert detected is not None and running is not None, phases
            assert detected <= running <= seconds, phases
            # Flink's own reporters are registered too: the JobManager's counted the restart.
            (record,) = running_jobs(state)
            assert restarts(record.flink_metrics_urls[0]) >= 1
            after = placed(rest)
            assert victim not in after
            assert standby <= after, f"the job did not move to the standby {standby}: {after}"
            # The standby now serves the moved pipeline's metrics; the victim's port is quiet
            # (its replacement, the new standby, runs nothing yet).
            serving_after = _serving(state)
            assert len(serving_after) == 2 and serving_after != serving
            assert _events_per_s(monitor) > 0
        assert stream.failed == 0, "the broker refused events: the drill is void"
        sent = set(stream.sent)
        try:
            wait_for(lambda: set(stream.visible(client)) == sent, job, 120, "every sent event")
        except AssertionError:
            missing = sorted(sent - set(stream.visible(client)), key=lambda e: stream.sent[e])
            when = [(e, round(stream.sent[e][0] - killed_at, 2)) for e in missing[:20]]
            raise AssertionError(f"{len(missing)} never readable (s from kill): {when}") from None
        seen = stream.visible(client)
        assert len(seen) == len(sent), "a reader saw an event twice"
        # The supervisor replaced the killed TaskManager: a new standby.
        wait_for(lambda: len(cluster.status(folder)["taskmanagers"]) == 3, job, 120, "3 TMs")
        assert victim not in cluster.taskmanagers(folder)
    finally:
        job.stop()
        client.store.drop_project()
    # Stopping `usp run --cluster` cancels its job on the cluster.
    deadline = time.monotonic() + 60
    while cluster.busy_taskmanagers(rest) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.busy_taskmanagers(rest) == {}
