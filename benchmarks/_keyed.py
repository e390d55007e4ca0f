"""Shared parts of the per-user job benchmarks (segments, sessions); not a benchmark itself.

* a throw-away copy of the example repository with a chosen set of signals (and segments or
  sessions kept or not), raw topics, platform topics and consumer groups prefixed per run;
* signal rows put straight on ``usp.signal.<signal>`` topics with the event time as record
  time, as the signal jobs publish them, and one job draining them while a counter is sampled;
* the freshness loop: raw events of new users at a steady rate, through the signal job and the
  per-user job, polled through Feast until a feature is served for each probe user.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from _common import log, percentiles
from bench_streaming import rate_between, start, stop, wait_counts

from usp_feast import SignalClient, devstack
from usp_feast.definitions import load_definitions
from usp_feast.kafka_io import producer
from usp_feast.runner import ensure_topics, job_command, write_prefixed_configs
from usp_feast.traffic import iso

ROOT = Path(__file__).resolve().parents[1]
RATE = 200  # raw events/s of the freshness loop
PROBES = 200
WARM_UP_S = 15.0
CITIES = ("Nice", "Lisbon", "Rome", "Oslo", "Lima", "Tokyo", "Austin", "Cape Town")
ROOM_TYPES = ("entire_home", "private_room", "shared_room", "hotel_room")


def parse_args(parts: Sequence[str]) -> argparse.Namespace:
    """``--quick``, ``--events N`` (default 100k, 20k with ``--quick``) and ``--only PART``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--only", choices=list(parts), help="run one part only")
    args = parser.parse_args()
    args.events = args.events or (20_000 if args.quick else 100_000)
    return args


def make_repo(
    root: Path,
    project: str,
    prefix: str,
    signals: Sequence[str],
    *,
    segments: bool,
    sessions: bool,
    joins: bool = False,
) -> Path:
    """The example repo with only ``signals`` (and its segments / sessions / joins if kept).

    Raw source topics are prefixed; definitions that read a signal left out must be dropped
    (``segments=False`` / ``sessions=False``), or the repository does not validate.
    """
    repo = root / "feature_repo"
    shutil.copytree(
        ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    shutil.copytree(ROOT / "validation", root / "validation")
    for kept, folder in ((segments, "segments"), (sessions, "sessions"), (joins, "joins")):
        if not kept:
            shutil.rmtree(repo / folder)
    for signal_file in [*(repo / "signals").glob("*.yaml"), *(repo / "joins").glob("*.yaml")]:
        if signal_file.parent.name == "signals" and signal_file.stem not in signals:
            signal_file.unlink()
            continue
        text = signal_file.read_text().replace("topic: events.", f"topic: {prefix}events.")
        signal_file.write_text(text)
    config = (repo / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(
        config.replace("project: usp_demo", f"project: {project}")
    )
    return repo


def fields(signal: str, i: int) -> dict[str, Any]:
    """The payload fields of the ``i``-th event of ``signal`` (valid for its contract)."""
    if signal == "search":
        return {
            "query": "x",
            "city": CITIES[i % len(CITIES)],
            "checkin": "2027-01-01",
            "checkout": "2027-01-03",
            "guests": 2,
        }
    if signal == "booking":
        return {"listing_id": 1, "nights": 2, "price": 100.0}
    if signal == "view":
        return {
            "listing_id": 1 + i % 997,
            "city": CITIES[i % len(CITIES)],
            "price": float(40 + i % 500),
            "room_type": ROOM_TYPES[i % len(ROOM_TYPES)],
        }
    raise ValueError(f"no benchmark fields for signal {signal!r}")


def signal_row(signal: str, i: int, user: int, at_ms: int) -> dict[str, Any]:
    """The ``i``-th signal row as a signal job publishes it (event id ``e<i>``)."""
    return {
        "user_id": user,
        "event_id": f"e{i}",
        "event_ts": iso(datetime.fromtimestamp(at_ms / 1000, UTC)),
        **fields(signal, i),
    }


def raw_event(signal: str, user: int) -> bytes:
    """A raw event of ``user`` as the producing service sends it, stamped now."""
    return orjson.dumps(
        {
            "event_id": uuid.uuid4().hex,
            "event_ts": iso(datetime.now(UTC)),
            "user_id": user,
            **fields(signal, user),
        }
    )


def put_signal_rows(kafka: str, prefix: str, rows: Iterable[tuple[str, int, dict]]) -> None:
    """Produce ``(signal, event ms, row)`` to ``<prefix>usp.signal.<signal>``, time = event time."""
    sender = producer(kafka)
    for signal, at, row in rows:
        sender.produce(f"{prefix}usp.signal.{signal}", orjson.dumps(row), timestamp=at)
        sender.poll(0)
    sender.flush(60)


@dataclass
class Bench:
    """One run's stack, repository, generated job configs and clients."""

    stack: Any
    run: str
    prefix: str
    work: Path
    repo: Path
    configs: list[Path]
    client: SignalClient
    raw_redis: redis.Redis

    def configs_named(self, *names: str) -> list[Path]:
        """The generated configs ``<name>.json`` for each name."""
        return [c for c in self.configs if c.stem in names]

    def finish(self) -> dict[str, int]:
        """Delete every key of the run's project and its temporary folder."""
        try:
            return {"keys_removed": self.client.store.drop_project()}
        finally:
            shutil.rmtree(self.work, ignore_errors=True)


def prepare(kind: str, project_kind: str, signals: Sequence[str], **kept: bool) -> Bench:
    """Build and ``feast apply`` a run's repository, write its prefixed job configs and topics.

    ``kept`` is ``segments=``, ``sessions=`` and ``joins=`` of :func:`make_repo`.
    """
    stack = devstack.up()
    run = uuid.uuid4().hex[:8]
    prefix = f"b{run}."
    work = Path(tempfile.mkdtemp(prefix=f"usp-bench-{kind}-"))
    repo = make_repo(work, f"uspbench_{project_kind}_{run}", prefix, signals, **kept)
    log("feast apply")
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), "apply"], cwd=repo, check=True, capture_output=True)
    topics = write_prefixed_configs(load_definitions(repo), work / "streaming", prefix)
    configs = sorted((work / "streaming").glob("*.json"))
    ensure_topics(stack.kafka, topics)
    return Bench(
        stack,
        run,
        prefix,
        work,
        repo,
        configs,
        SignalClient.from_repo(repo),
        redis.Redis.from_url(stack.redis),
    )


def drain(
    bench: Bench, names: Sequence[str], read_count: Callable[[], int], total: int, timeout: float
) -> tuple[list[tuple[float, int]], float | None]:
    """Run one job of the configs ``names`` until ``read_count()`` reaches ``total``.

    Returns the (time, count) samples and the rate between 10 % and 90 % of ``total``.
    """
    command = job_command(bench.configs_named(*names), bench.repo, bench.work / "checkpoints-1")
    job = start(command, bench.work / "job1.log")
    try:
        samples = wait_counts(read_count, total, timeout, job)
    finally:
        stop(job)
    return samples, rate_between(samples, total)


@dataclass(frozen=True)
class Probe:
    """What the freshness loop sends and waits for.

    Attributes:
        signal: The raw event kind produced (``search``, ``view``); its signal job publishes
            ``usp.signal.<signal>``, watched for the breakdown (a join: the join's name).
        raw_topic: The signal's raw source topic (unprefixed, e.g. ``events.search``).
        feature: The Feast feature ref polled (``view:feature``); a probe counts as served
            when its value is truthy (a member, a count of at least 1).
        label: Names the second half of the breakdown, ``signal_topic_to_<label>``.
    """

    signal: str
    raw_topic: str
    feature: str
    label: str
    events: Callable[[int], list[tuple[str, bytes]]] | None = None
    """The raw (topic, event) pairs sent for a user; default: one ``signal`` event."""

    def for_user(self, user: int) -> list[tuple[str, bytes]]:
        """What the loop produces for ``user`` (topics unprefixed)."""
        if self.events is not None:
            return self.events(user)
        return [(self.raw_topic, raw_event(self.signal, user))]


def freshness(bench: Bench, probe: Probe, quick: bool) -> dict:
    """Produce → served latency of ``probe.feature`` for new users at 200 raw events/s.

    One job runs every config of the repository (as ``usp run --all`` does). The first 15 s
    after it serves (5 s with ``quick``) run at the same rate but are not measured; 200 probes
    are spread over the next 20 s (10 s).
    """
    from feast import FeatureStore

    rate, seconds = RATE, 10.0 if quick else 20.0
    store = FeatureStore(repo_path=str(bench.repo))
    job = start(
        job_command(bench.configs, bench.repo, bench.work / "checkpoints-2"),
        bench.work / "job2.log",
    )
    sent: dict[int, int] = {}
    seen: dict[int, int] = {}
    kafka = bench.stack.kafka
    try:
        log("waiting for the jobs to run")
        warm_user = 8_000_000
        sender = producer(kafka)
        for topic, event in probe.for_user(warm_user):
            sender.produce(bench.prefix + topic, event)
        sender.flush(10)
        deadline = time.monotonic() + 240
        while not served_users(store, probe.feature, [warm_user]) and time.monotonic() < deadline:
            if job.poll() is not None:
                raise RuntimeError("job exited early")
            time.sleep(0.5)
        done = threading.Event()
        warm_up = 5.0 if quick else WARM_UP_S

        def produce() -> None:
            # The first seconds after a job starts are not its steady state (one stall of
            # about 2 s was seen there): they run at the same rate but are not measured.
            sender = producer(kafka)
            per_user = len(probe.for_user(warm_user))  # raw events per user
            interval, next_at = per_user / rate, time.perf_counter()
            skip, measured = int(rate * warm_up / per_user), int(rate * seconds / per_user)
            for i in range(skip + measured):
                user = 9_000_000 + i
                if i == skip:
                    log(f"freshness at {rate} raw events/s for {seconds:.0f} s")
                if i >= skip and (i - skip) % max(1, measured // PROBES) == 0:
                    sent[user] = time.perf_counter_ns()
                for topic, event in probe.for_user(user):
                    sender.produce(bench.prefix + topic, event)
                sender.poll(0)
                next_at += interval
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            sender.flush(10)
            done.set()

        def watch_signal_topic() -> None:
            # When each probe's signal row is published (the per-user job's input), to split
            # the latency into "signal job + topic" and "per-user job + store".
            from confluent_kafka import Consumer

            consumer = Consumer(
                {
                    "bootstrap.servers": kafka,
                    "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 5,
                }
            )
            consumer.subscribe([f"{bench.prefix}usp.signal.{probe.signal}"])
            while time.perf_counter() < stop_at:
                if done.is_set() and len(published) >= len(sent):
                    break
                message = consumer.poll(0.05)
                if message is None or message.error():
                    continue
                user = orjson.loads(message.value())["user_id"]
                if user in sent:
                    published.setdefault(user, time.perf_counter_ns())
            consumer.close()

        published: dict[int, int] = {}
        stop_at = time.perf_counter() + warm_up + seconds + 30
        watcher = threading.Thread(target=watch_signal_topic, daemon=True)
        watcher.start()
        time.sleep(3)  # the watcher's consumer joins before the first probe
        writer = threading.Thread(target=produce, daemon=True)
        writer.start()
        while time.perf_counter() < stop_at:
            waiting = [u for u in list(sent) if u not in seen]
            if done.is_set() and not waiting:
                break
            for user in served_users(store, probe.feature, waiting[:100]):
                seen.setdefault(user, time.perf_counter_ns())
            time.sleep(0.01)  # a tight loop here would take CPU from the jobs on 2 cores
        writer.join()
        watcher.join()
    finally:
        stop(job)
    result = ms(percentiles([seen[u] - sent[u] for u in seen]))
    result.update(
        {"rate_per_s": rate, "seconds": seconds, "probes_sent": len(sent), "probes_seen": len(seen)}
    )
    both = [u for u in seen if u in published]
    result["breakdown"] = {
        "raw_to_signal_topic": ms(percentiles([published[u] - sent[u] for u in both])),
        f"signal_topic_to_{probe.label}": ms(percentiles([seen[u] - published[u] for u in both])),
    }
    return result


def served_users(store: Any, feature: str, users: list[int]) -> list[int]:
    """The users for whom Feast serves a truthy value of ``feature`` (one read for all)."""
    if not users:
        return []
    name = feature.split(":", 1)[1]
    found = store.get_online_features([feature], entity_rows=[{"user_id": u} for u in users])
    values = found.to_dict()
    return [u for u, value in zip(values["user_id"], values[name], strict=True) if value]


def ms(stats: dict) -> dict:
    """A :func:`_common.percentiles` summary in milliseconds."""
    return {
        k.replace("_us", "_ms"): (round(v / 1000, 1) if k.endswith("_us") else v)
        for k, v in stats.items()
    }
