"""Streaming signal job: throughput vs a bare PyFlink job, and end-to-end freshness.

1. Throughput: N valid ``search`` events are produced to a fresh topic, then the signal job
   (validate + transform + versioned store through Feast + signal topic) starts and drains
   them; the rate is taken between 10 % and 90 % of the rows becoming readable. Baseline in
   the same run: a bare PyFlink job (Kafka → Python map → discard) over the same topic.
2. Freshness: with the job caught up, events are produced at a steady rate (1k and 5k/s); a
   reader polls ``SignalClient.recent`` for a sample of probe users and records, per probe
   event, produce → first visible.

    .venv/bin/python benchmarks/bench_streaming.py [--quick] [--events N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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

from usp_feast import SignalClient, devstack
from usp_feast.definitions import load_definitions
from usp_feast.kafka_io import producer, send
from usp_feast.runner import ensure_topics, job_command, job_environment, write_configs
from usp_feast.traffic import iso

ROOT = Path(__file__).resolve().parents[1]
USERS = 1000
PROBES = 20


def make_repo(root: Path, project: str, prefix: str) -> Path:
    repo = root / "feature_repo"
    shutil.copytree(
        ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    shutil.copytree(ROOT / "validation", root / "validation")
    for signal_file in (repo / "signals").glob("*.yaml"):
        if signal_file.name != "search.yaml":
            signal_file.unlink()  # one signal job: the one being measured
    for derived in ("joins", "segments", "sessions"):
        shutil.rmtree(repo / derived, ignore_errors=True)  # they read the signals just removed
    text = (repo / "signals" / "search.yaml").read_text()
    (repo / "signals" / "search.yaml").write_text(
        text.replace("topic: events.", f"topic: {prefix}events.")
    )
    config = (
        (repo / "feature_store.yaml")
        .read_text()
        .replace("project: usp_demo", f"project: {project}")
    )
    (repo / "feature_store.yaml").write_text(config)
    return repo


def search_event(user: int, event_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_ts": iso(datetime.now(UTC)),
            "user_id": user,
            "query": "quiet flat",
            "city": "Lisbon",
            "checkin": "2027-02-01",
            "checkout": "2027-02-05",
            "guests": 2,
        }
    )


def start(command: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as sink:
        return subprocess.Popen(
            command,
            env=job_environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def rate_between(samples: list[tuple[float, int]], total: int) -> float | None:
    """Rows/s between 10 % and 90 % of ``total`` from (time, count) samples."""
    low = next((t for t, c in samples if c >= total * 0.1), None)
    high = next((t for t, c in samples if c >= total * 0.9), None)
    if low is None or high is None or high <= low:
        return None
    return total * 0.8 / (high - low)


def wait_counts(read_count, total: int, timeout: float, process) -> list[tuple[float, int]]:
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("job exited early")
        count = read_count()
        samples.append((time.monotonic(), count))
        if count >= total:
            break
        time.sleep(0.2)
    return samples


def bare_job_rate(stack, topic: str, run: str, rows: int, work: Path, raw_redis) -> float | None:
    """The baseline: rows/s of ``bare_job.py`` (Kafka → per-record Python map) over ``topic``.

    It reports progress every 2,000 rows, so the rate is taken over whole reports.
    """
    key = f"uspbench:bare:{run}"
    total = rows - rows % 2000
    bare = start(
        [
            sys.executable,
            str(Path(__file__).with_name("bare_job.py")),
            topic,
            f"bare-{run}",
            stack.redis,
            key,
        ],
        work / "bare.log",
    )

    def bare_count() -> int:
        value = raw_redis.get(key)
        return int(value.split()[0]) if value else 0

    try:
        samples = wait_counts(bare_count, total, 600, bare)
    finally:
        stop(bare)
        raw_redis.delete(key)
    return rate_between(samples, total)


def freshness(client: SignalClient, kafka: str, topic: str, rate: int, seconds: float) -> dict:
    sent: dict[str, int] = {}
    seen: dict[str, int] = {}
    lock = threading.Lock()
    done = threading.Event()
    run = uuid.uuid4().hex[:6]

    def produce() -> None:
        sender = producer(kafka)
        interval = 1.0 / rate
        next_at = time.perf_counter()
        end = next_at + seconds
        i = 0
        while time.perf_counter() < end:
            i += 1
            probe = i % 20 == 0
            user = 900_000 + (i // 20) % PROBES if probe else 1 + i % USERS
            event_id = f"f{run}-{i}"
            payload = search_event(user, event_id)
            if probe:
                with lock:
                    sent[event_id] = time.perf_counter_ns()
            sender.produce(topic, payload)
            sender.poll(0)
            next_at += interval
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        sender.flush(10)
        done.set()

    def read() -> None:
        while not (done.is_set() and len(seen) >= len(sent)):
            for user in range(900_000, 900_000 + PROBES):
                for event in client.recent(user, "search", limit=10):
                    if event.event_id in sent and event.event_id not in seen:
                        seen[event.event_id] = time.perf_counter_ns()
            if done.is_set() and time.perf_counter() > deadline:
                break

    deadline = time.perf_counter() + seconds + 20
    writer = threading.Thread(target=produce)
    reader = threading.Thread(target=read)
    writer.start()
    reader.start()
    writer.join()
    reader.join()
    latencies = [seen[e] - sent[e] for e in seen]
    result = percentiles(latencies)
    result = {
        k.replace("_us", "_ms"): (round(v / 1000, 1) if k.endswith("_us") else v)
        for k, v in result.items()
    }
    result.update(
        {"rate_per_s": rate, "seconds": seconds, "probes_sent": len(sent), "probes_seen": len(seen)}
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    args = parser.parse_args()
    events = args.events or (20_000 if args.quick else 100_000)
    seconds = 8.0 if args.quick else 20.0
    stack = devstack.up()
    run = uuid.uuid4().hex[:8]
    project = f"uspbench_stream_{run}"
    prefix = f"b{run}."
    topic = f"{prefix}events.search"
    work = Path(tempfile.mkdtemp(prefix="usp-bench-stream-"))
    repo = make_repo(work, project, prefix)
    log("feast apply")
    feast = Path(sys.executable).with_name("feast")
    subprocess.run([str(feast), "apply"], cwd=repo, check=True, capture_output=True)
    definitions = load_definitions(repo)
    configs = sorted(write_configs(definitions, work / "streaming"))
    ensure_topics(stack.kafka, [topic, "usp.signal.search", "usp.dlq.search"])
    client = SignalClient.from_repo(repo)
    raw_redis = redis.Redis.from_url(stack.redis)
    result: dict = {"benchmark": "streaming", "machine": machine_info(raw_redis), "events": events}
    try:
        log(f"producing {events} events to {topic}")
        sender = producer(stack.kafka)
        for i in range(events):
            send(sender, topic, search_event(1 + i % USERS, f"t{run}-{i}"))
            if i % 10_000 == 0:
                sender.poll(0)
        sender.flush(60)

        log("baseline: bare PyFlink job (Kafka → Python map → discard)")
        bare_rate = bare_job_rate(stack, topic, run, events, work, raw_redis)

        log("signal job: validate + transform + store + signal topic")
        job = start(job_command(configs, repo, work / "checkpoints"), work / "job.log")
        keys = [client.store.key("search", str(1 + u)) for u in range(USERS)]

        def stored() -> int:
            with raw_redis.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.zcard(k)
                return sum(pipe.execute())

        try:
            samples = wait_counts(stored, events, 900, job)
            job_rate = rate_between(samples, events)
            result["throughput"] = {
                "signal_job_events_per_s": None if job_rate is None else round(job_rate),
                "bare_job_events_per_s": None if bare_rate is None else round(bare_rate),
                "ratio_signal_to_bare": None
                if not job_rate or not bare_rate
                else ratio(job_rate, bare_rate),
                "goal": "≥ 20k events/s and ratio ≥ 0.5",
                "met": bool(
                    job_rate and bare_rate and job_rate >= 20_000 and job_rate / bare_rate >= 0.5
                ),
            }
            log(f"throughput: {result['throughput']}")
            result["freshness"] = {}
            for rate in (1000, 5000):
                log(f"freshness at {rate} events/s for {seconds:.0f} s")
                result["freshness"][f"{rate}_per_s"] = freshness(
                    client, stack.kafka, topic, rate, seconds
                )
            p99s = [f["p99_ms"] for f in result["freshness"].values() if "p99_ms" in f]
            result["freshness"]["goal"] = "must p99 < 1000 ms; goal p99 ≤ 250 ms"
            result["freshness"]["met_must"] = bool(p99s) and all(p < 1000 for p in p99s)
            result["freshness"]["met_goal"] = bool(p99s) and all(p <= 250 for p in p99s)
        finally:
            stop(job)
    finally:
        result["cleanup"] = {"keys_removed": client.store.drop_project()}
        shutil.rmtree(work, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    main()
