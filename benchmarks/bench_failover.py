"""Failover and scale-out on the local standalone Flink cluster (``usp cluster up``).

1. Recovery time after a SIGKILLed TaskManager, events flowing at a steady rate, the
   ``wishlist`` signal job at parallelism 2 over 2 partitions. Recovery = kill → an event sent
   after the kill is readable on every partition (``tests/e2e/failover.py``). Three shapes,
   each a fresh cluster, ``--kills`` kills each (median reported):

   * ``no_standby`` (the baseline): 2 TaskManagers; the job waits for the supervisor's
     replacement to start and register, as it would for a new pod;
   * ``cold_standby``: a third TaskManager with a free slot, not warmed up;
   * ``warm_standby`` (what ``usp cluster up --standby 1`` does): the standby has already
     imported the pipelines' Python (``usp_feast.cluster.warm_up``).

   Each kill is also split into phases from the JobManager's REST API
   (``tests.e2e.failover.recovery_phases``): loss detected, restarted tasks initializing,
   running (after the Python steps' ``open()``), first record readable.

   After the kills, every acknowledged event must be readable exactly once (checked, and the
   script exits non-zero if not).
2. Throughput scaling: N events preloaded into a 2-partition topic, drained by the job at
   parallelism 1, then 2 (rate between 10 % and 90 % of rows stored).

    .venv/bin/python benchmarks/bench_failover.py [--quick] [--kills K] [--events N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e: the drill
from _common import emit, free_port, log, machine_info, ratio
from bench_streaming import rate_between, wait_counts

from tests.e2e.failover import SteadyStream, kill, placed, recovery_phases
from tests.e2e.harness import Job, wait_for, workspace
from usp_feast import SignalClient, cluster, devstack
from usp_feast.kafka_io import produce_events

USERS = range(700, 720)
SHAPES = [("no_standby", 0, True), ("cold_standby", 1, False), ("warm_standby", 1, True)]
JOB_TIMEOUT = 300


def _job(space: Any, work: Path, rest: str, parallelism: int) -> Job:
    work.mkdir(parents=True, exist_ok=True)
    job = Job(
        space.repo,
        [space.streaming / "wishlist.json"],
        work / "checkpoints",
        work / "job.log",
        parallelism=parallelism,
        jobmanager=rest,
    )
    job.start()
    return job


def _ready(folder: Path, spec: cluster.ClusterSpec) -> bool:
    registered = set(cluster.status(folder).get("taskmanagers", {}))
    if len(registered) != spec.processes:
        return False
    return not spec.warm_up or registered <= cluster.warm_taskmanagers(folder)


def recovery(shape: str, standby: int, warm: bool, kills: int, work: Path) -> dict[str, Any]:
    """Kill a busy TaskManager ``kills`` times on a fresh cluster of this shape."""
    stack = devstack.endpoints()
    folder = work / f"cluster-{shape}"
    spec = cluster.ClusterSpec(taskmanagers=2, standby=standby, rest_port=free_port(), warm_up=warm)
    log(f"{shape}: starting the cluster ({spec.processes} TaskManagers)")
    record = cluster.up(spec, folder)
    rest = record["rest"]
    space = workspace(work / shape, stack.kafka, stack.redis, f"fo_{shape}", partitions=2)
    job = _job(space, work / shape, rest, parallelism=2)
    client = SignalClient.from_repo(space.repo)
    seconds: list[float] = []
    phases: list[dict[str, float | None]] = []
    stream = SteadyStream(stack.kafka, f"{space.prefix}events.wishlist_add", 2, USERS)
    try:
        with stream:
            wait_for(
                lambda: len(placed(rest)) == 2 and len(stream.flowing(client)) == 2,
                job,
                JOB_TIMEOUT,
                "both pipelines placed and flowing",
            )
            for attempt in range(kills):
                time.sleep(5)  # let checkpoints complete while events flow
                victim = sorted(placed(rest))[0]
                killed_at = kill(cluster.taskmanagers(folder)[victim])
                took = stream.recovery_seconds(client, killed_at, JOB_TIMEOUT, job.check_alive)
                seconds.append(round(took, 2))
                phases.append({**recovery_phases(rest, killed_at), "first_record_s": seconds[-1]})
                log(f"{shape}: kill {attempt + 1}/{kills} of {victim}: {phases[-1]}")
                # Back to full strength (and the replacement warmed) before the next kill.
                wait_for(lambda: _ready(folder, spec), job, JOB_TIMEOUT, "the replacement")
                time.sleep(5)
        sent = set(stream.sent)
        wait_for(lambda: set(stream.visible(client)) >= sent, job, JOB_TIMEOUT, "every event")
        seen = stream.visible(client)
        exactly_once = len(seen) == len(set(seen)) == len(sent)
    finally:
        job.stop()
        client.store.drop_project()
        cluster.down(folder)
    return {
        "taskmanagers": spec.processes,
        "recovery_s": seconds,
        "median_s": statistics.median(seconds),
        "phases": phases,
        "events": len(sent),
        "refused_by_broker": stream.failed,
        "exactly_once": exactly_once,
    }


def drain_rate(space: Any, work: Path, rest: str, parallelism: int, events: int) -> float | None:
    """Rows/s while a job at ``parallelism`` drains ``events`` preloaded events."""
    client = SignalClient.from_repo(space.repo)
    users = range(1, 1001)
    keys = [client.store.key("wishlist", str(u)) for u in users]
    produce_events(
        devstack.endpoints().kafka,
        (
            (
                f"{space.prefix}events.wishlist_add",
                orjson.dumps(
                    {
                        "event_id": f"d{i}",
                        "event_ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "user_id": users[i % len(users)],
                        "listing_id": i + 1,
                    }
                ),
            )
            for i in range(events)
        ),
    )

    def stored() -> int:
        pipe = client.store.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcard(key)
        return int(sum(pipe.execute()))

    job = _job(space, work / f"p{parallelism}", rest, parallelism)
    try:
        samples = wait_counts(stored, events, JOB_TIMEOUT, job.process)
    finally:
        job.stop()
        client.store.drop_project()
    return rate_between(samples, events)


def scaling(events: int, work: Path) -> dict[str, Any]:
    """The same preload drained at parallelism 1 and 2, each by a fresh job and project."""
    stack = devstack.endpoints()
    folder = work / "cluster-scaling"
    record = cluster.up(
        cluster.ClusterSpec(taskmanagers=2, standby=0, rest_port=free_port()), folder
    )
    rates: dict[str, float | None] = {}
    try:
        for parallelism in (1, 2):
            space = workspace(
                work / f"scale{parallelism}", stack.kafka, stack.redis, f"sc{parallelism}",
                partitions=2,
            )  # fmt: skip
            rates[f"p{parallelism}"] = drain_rate(space, work, record["rest"], parallelism, events)
            log(f"scaling: parallelism {parallelism}: {rates[f'p{parallelism}']} rows/s")
    finally:
        cluster.down(folder)
    return {
        "events": events,
        "rows_per_s": rates,
        "speedup_p2_vs_p1": ratio(rates["p2"] or 0, rates["p1"] or 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one kill per shape, fewer events")
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--shapes",
        default="no_standby,cold_standby,warm_standby",
        help="comma-separated subset of the cluster shapes to measure",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the parallelism run")
    args = parser.parse_args()
    kills = args.kills or (1 if args.quick else 3)
    events = args.events or (10_000 if args.quick else 60_000)
    with tempfile.TemporaryDirectory(prefix="usp-bench-failover-") as tmp:
        work = Path(tmp)
        shapes = {
            name: recovery(name, standby, warm, kills, work)
            for name, standby, warm in SHAPES
            if name in args.shapes.split(",")
        }
        scale = None if args.no_scaling else scaling(events, work)
    medians = {name: shape["median_s"] for name, shape in shapes.items()}
    baseline = medians.get("no_standby")
    result = {
        "benchmark": "failover",
        "machine": machine_info(),
        "kills_per_shape": kills,
        "recovery": shapes,
        "speedup_vs_no_standby": {
            name: ratio(baseline, median) if baseline else None
            for name, median in medians.items()
            if name != "no_standby"
        },
        "scaling": scale,
    }
    emit(result)
    if not all(shape["exactly_once"] for shape in shapes.values()):
        sys.exit("a reader did not see every acknowledged event exactly once (see recovery)")


if __name__ == "__main__":
    main()
