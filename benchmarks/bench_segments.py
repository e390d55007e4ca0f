"""Segment job: membership update throughput, trigger → in_segment freshness, members listing.

1. Throughput: N signal rows (searches and some bookings over U users, event time increasing)
   are put on a fresh signal topic, then the segment job for ``active_trip_planner`` starts and
   drains them; every row changes a membership (enter, renew or exit), so the rate is taken
   from the stored changes between 10 % and 90 % of the expected total (the pure core, replayed
   here over the same rows, gives that total). Baseline in the same run: the bare PyFlink job
   (Kafka → Python map → discard) over the same topic.
2. Freshness: one job runs the ``search`` and ``booking`` signal jobs and the segment job; raw
   searches of new users are produced at a steady rate (the first 15 s are warm-up, not
   measured) and a reader polls Feast
   (``get_online_features(["segment_active_trip_planner:in_segment"])``) until each probe user
   is a member: produce of the raw event → in_segment true.
3. Members listing: a segment index with 1M members (100k with ``--quick``) is filled, then
   pages of 100 are read from the top and at deep cursors; baseline: the same reads on a
   1,000-member index (the ratio shows the cost does not grow with N).

    .venv/bin/python benchmarks/bench_segments.py [--quick]
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
from datetime import UTC, datetime
from pathlib import Path

import orjson
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, machine_info, percentiles, ratio
from bench_streaming import bare_job_rate, rate_between, start, stop, wait_counts

from usp_feast import SignalClient, devstack
from usp_feast.definitions import load_definitions
from usp_feast.kafka_io import producer
from usp_feast.membership import MembersIndex
from usp_feast.runner import ensure_topics, job_command, write_prefixed_configs
from usp_feast.segments import SegmentEvent, SegmentLogic, replay
from usp_feast.store import connect
from usp_feast.traffic import iso

ROOT = Path(__file__).resolve().parents[1]
SEGMENT = "active_trip_planner"
VIEW = f"segment_{SEGMENT}"
USERS = 2000
PROBES = 200
WARM_UP_S = 15.0


def make_repo(root: Path, project: str, prefix: str) -> Path:
    """The example repo with only search, booking and the segment; raw topics prefixed."""
    repo = root / "feature_repo"
    shutil.copytree(
        ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    shutil.copytree(ROOT / "validation", root / "validation")
    shutil.rmtree(repo / "sessions")  # they read signals this benchmark leaves out
    for signal_file in (repo / "signals").glob("*.yaml"):
        if signal_file.name not in ("search.yaml", "booking.yaml"):
            signal_file.unlink()
            continue
        text = signal_file.read_text().replace("topic: events.", f"topic: {prefix}events.")
        signal_file.write_text(text)
    config = (repo / "feature_store.yaml").read_text()
    (repo / "feature_store.yaml").write_text(
        config.replace("project: usp_demo", f"project: {project}")
    )
    return repo


def signal_rows(count: int, start_ms: int) -> list[tuple[str, int, dict]]:
    """(signal, event ms, row): mostly searches, a booking per 10 events, time increasing."""
    rows = []
    for i in range(count):
        user = 1 + i % USERS
        at = start_ms + i
        kind = "booking" if i % 10 == 9 else "search"
        row = {
            "user_id": user,
            "event_id": f"e{i}",
            "event_ts": iso(datetime.fromtimestamp(at / 1000, UTC)),
        }
        if kind == "search":
            row |= {
                "query": "x",
                "city": "Nice",
                "checkin": "2027-01-01",
                "checkout": "2027-01-03",
                "guests": 2,
            }
        else:
            row |= {"listing_id": 1, "nights": 2, "price": 100.0}
        rows.append((kind, at, row))
    return rows


def expected_changes(rows: list[tuple[str, int, dict]], repo: Path) -> int:
    """How many changes the segment job must store: the pure core over the same rows."""
    logic = SegmentLogic(load_definitions(repo).segment(SEGMENT).rules())
    by_user: dict[int, list[SegmentEvent]] = {}
    for kind, at, row in rows:
        by_user.setdefault(row["user_id"], []).append(SegmentEvent(kind, row["event_id"], at, row))
    return sum(len(replay(logic, events)[1]) for events in by_user.values())


def throughput(
    args,
    stack,
    work: Path,
    repo: Path,
    configs: list[Path],
    prefix: str,
    run: str,
    client: SignalClient,
    raw_redis: redis.Redis,
) -> dict:
    rows = signal_rows(args.events, int(time.time() * 1000) - 3_600_000)
    total = expected_changes(rows, repo)
    log(f"producing {len(rows)} signal rows ({total} membership changes expected)")
    sender = producer(stack.kafka)
    for kind, at, row in rows:
        sender.produce(f"{prefix}usp.signal.{kind}", orjson.dumps(row), timestamp=at)
        sender.poll(0)
    sender.flush(60)

    log("baseline: bare PyFlink job over the search signal topic")
    searches = sum(1 for kind, _, _ in rows if kind == "search")
    bare_rate = bare_job_rate(stack, f"{prefix}usp.signal.search", run, searches, work, raw_redis)

    log("segment job")
    segment_config = [c for c in configs if c.name == f"{VIEW}.json"]
    job = start(job_command(segment_config, repo, work / "checkpoints-1"), work / "job1.log")
    keys = [client.store.key(VIEW, str(u)) for u in range(1, USERS + 1)]

    def stored() -> int:
        with raw_redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.zcard(k)
            return sum(pipe.execute())

    try:
        samples = wait_counts(stored, total, 900, job)
    finally:
        stop(job)
    rate = rate_between(samples, total)
    return {
        "signal_rows": len(rows),
        "membership_changes": total,
        "stored_changes": samples[-1][1] if samples else 0,
        "segment_job_events_per_s": None if rate is None else round(rate),
        "bare_job_events_per_s": None if bare_rate is None else round(bare_rate),
        "ratio_segment_to_bare": None if not rate or not bare_rate else ratio(rate, bare_rate),
    }


def freshness(
    stack, work: Path, repo: Path, configs: list[Path], prefix: str, rate: int, seconds: float
) -> dict:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    job = start(job_command(configs, repo, work / "checkpoints-2"), work / "job2.log")
    sent: dict[int, int] = {}
    seen: dict[int, int] = {}
    topic = f"{prefix}events.search"
    try:
        log("waiting for the signal and segment jobs to run")
        warm_user = 8_000_000
        _produce_search(stack.kafka, topic, warm_user)
        deadline = time.monotonic() + 240
        while not _members(store, [warm_user]) and time.monotonic() < deadline:
            if job.poll() is not None:
                raise RuntimeError("job exited early")
            time.sleep(0.5)
        done = threading.Event()
        warm_up = WARM_UP_S if seconds > 10 else 5.0

        def produce() -> None:
            # The first seconds after a job starts are not its steady state (one stall of
            # about 2 s was seen there): they run at the same rate but are not measured.
            sender = producer(stack.kafka)
            interval, next_at = 1.0 / rate, time.perf_counter()
            skip = int(rate * warm_up)
            for i in range(skip + int(rate * seconds)):
                user = 9_000_000 + i
                if i == skip:
                    log(f"freshness at {rate} searches/s for {seconds:.0f} s")
                if i >= skip and (i - skip) % max(1, int(rate * seconds) // PROBES) == 0:
                    sent[user] = time.perf_counter_ns()
                sender.produce(topic, _search(user))
                sender.poll(0)
                next_at += interval
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            sender.flush(10)
            done.set()

        def watch_signal_topic() -> None:
            # When each probe's signal row is published (the segment job's input), to split
            # the latency into "signal job + topic" and "segment job + store".
            from confluent_kafka import Consumer

            consumer = Consumer(
                {
                    "bootstrap.servers": stack.kafka,
                    "group.id": f"bench-watch-{uuid.uuid4().hex[:6]}",
                    "auto.offset.reset": "latest",
                    "fetch.wait.max.ms": 5,
                }
            )
            consumer.subscribe([f"{prefix}usp.signal.search"])
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
        watcher = threading.Thread(target=watch_signal_topic)
        watcher.start()
        time.sleep(3)  # the watcher's consumer joins before the first probe
        writer = threading.Thread(target=produce)
        writer.start()
        while time.perf_counter() < stop_at:
            waiting = [u for u in list(sent) if u not in seen]
            if done.is_set() and not waiting:
                break
            for user in _members(store, waiting[:100]):
                seen.setdefault(user, time.perf_counter_ns())
            time.sleep(0.01)  # a tight loop here would take CPU from the jobs on 2 cores
        writer.join()
        watcher.join()
    finally:
        stop(job)
    result = _ms(percentiles([seen[u] - sent[u] for u in seen]))
    result.update(
        {"rate_per_s": rate, "seconds": seconds, "probes_sent": len(sent), "probes_seen": len(seen)}
    )
    both = [u for u in seen if u in published]
    result["breakdown"] = {
        "raw_to_signal_topic": _ms(percentiles([published[u] - sent[u] for u in both])),
        "signal_topic_to_in_segment": _ms(percentiles([seen[u] - published[u] for u in both])),
    }
    return result


def _ms(stats: dict) -> dict:
    return {
        k.replace("_us", "_ms"): (round(v / 1000, 1) if k.endswith("_us") else v)
        for k, v in stats.items()
    }


def _search(user: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": uuid.uuid4().hex,
            "event_ts": iso(datetime.now(UTC)),
            "user_id": user,
            "query": "x",
            "city": "Nice",
            "checkin": "2027-01-01",
            "checkout": "2027-01-03",
            "guests": 2,
        }
    )


def _produce_search(kafka: str, topic: str, user: int) -> None:
    sender = producer(kafka)
    sender.produce(topic, _search(user))
    sender.flush(10)


def _members(store, users: list[int]) -> list[int]:
    if not users:
        return []
    found = store.get_online_features(
        [f"{VIEW}:in_segment"], entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    return [u for u, flag in zip(found["user_id"], found["in_segment"], strict=True) if flag]


def listing(redis_url: str, members: int, reads: int) -> dict:
    index = MembersIndex(connect(redis_url), project=f"uspbench_members_{uuid.uuid4().hex[:8]}")
    far = int(time.time() * 1000) + 86_400_000
    try:
        out = {}
        for name, size in (("baseline_1k", 1000), (f"members_{members}", members)):
            log(f"filling a members index with {size:,} members")
            started = time.perf_counter()
            for low in range(0, size, 10_000):
                index.apply(
                    name,
                    [
                        {
                            "user_id": str(u),
                            "in_segment": True,
                            "entered_at": 1_000_000 + u,
                            "expires_at": far,
                        }
                        for u in range(low, min(size, low + 10_000))
                    ],
                )
            fill_s = time.perf_counter() - started
            first, deep = [], []
            cursor = None
            for _ in range(reads):
                t = time.perf_counter_ns()
                page = index.page(name, limit=100)
                first.append(time.perf_counter_ns() - t)
                cursor = page.next_cursor
            # a cursor deep in the listing: walk to about half way once, then time pages there
            walked = 0
            cursor = None
            while walked < size // 2:
                page = index.page(name, cursor=cursor, limit=min(1000, size // 2 - walked))
                walked += len(page.members)
                cursor = page.next_cursor
                if cursor is None:
                    break
            for _ in range(reads):
                t = time.perf_counter_ns()
                index.page(name, cursor=cursor, limit=100)
                deep.append(time.perf_counter_ns() - t)
            memory = sum(
                int(index.client.memory_usage(k) or 0)
                for k in (
                    f"usp:{index.project}:segment:{{{name}}}:members",
                    f"usp:{index.project}:segment:{{{name}}}:expires",
                )
            )
            out[name] = {
                "members": size,
                "fill_seconds": round(fill_s, 2),
                "first_page_100": percentiles(first),
                "deep_page_100": percentiles(deep),
                "index_bytes_per_member": round(memory / size, 1),
            }
            index.drop(name)
        big = out[f"members_{members}"]
        out["ratio_deep_page_p50_vs_1k"] = ratio(
            big["deep_page_100"]["p50_us"], out["baseline_1k"]["deep_page_100"]["p50_us"]
        )
        return out
    finally:
        for name in ("baseline_1k", f"members_{members}"):
            index.drop(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--only", choices=["throughput", "freshness", "listing"], help="run one part only"
    )
    args = parser.parse_args()
    args.events = args.events or (20_000 if args.quick else 100_000)
    members = 100_000 if args.quick else 1_000_000
    stack = devstack.up()
    run = uuid.uuid4().hex[:8]
    prefix = f"b{run}."
    work = Path(tempfile.mkdtemp(prefix="usp-bench-segments-"))
    repo = make_repo(work, f"uspbench_seg_{run}", prefix)
    log("feast apply")
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), "apply"], cwd=repo, check=True, capture_output=True)
    topics = write_prefixed_configs(load_definitions(repo), work / "streaming", prefix)
    configs = sorted((work / "streaming").glob("*.json"))
    ensure_topics(stack.kafka, topics)
    client = SignalClient.from_repo(repo)
    raw_redis = redis.Redis.from_url(stack.redis)
    result: dict = {"benchmark": "segments", "machine": machine_info(raw_redis)}
    try:
        if args.only in (None, "throughput"):
            result["throughput"] = throughput(
                args, stack, work, repo, configs, prefix, run, client, raw_redis
            )
            log(f"throughput: {result['throughput']}")
        if args.only in (None, "freshness"):
            result["freshness_trigger_to_in_segment"] = freshness(
                stack, work, repo, configs, prefix, 200, 10.0 if args.quick else 20.0
            )
            log(f"freshness: {result['freshness_trigger_to_in_segment']}")
        if args.only in (None, "listing"):
            result["members_listing"] = listing(stack.redis, members, 200)
    finally:
        result["cleanup"] = {"keys_removed": client.store.drop_project()}
        shutil.rmtree(work, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
