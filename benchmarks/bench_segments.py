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

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, machine_info, percentiles, ratio
from _keyed import Bench, Probe, drain, freshness, parse_args, prepare, put_signal_rows, signal_row
from bench_streaming import bare_job_rate

from usp_feast.definitions import load_definitions
from usp_feast.membership import MembersIndex
from usp_feast.segments import SegmentEvent, SegmentLogic, replay
from usp_feast.store import connect

SEGMENT = "active_trip_planner"
VIEW = f"segment_{SEGMENT}"
USERS = 2000


def signal_rows(count: int, start_ms: int) -> list[tuple[str, int, dict]]:
    """(signal, event ms, row): mostly searches, a booking per 10 events, time increasing."""
    rows = []
    for i in range(count):
        kind = "booking" if i % 10 == 9 else "search"
        rows.append((kind, start_ms + i, signal_row(kind, i, 1 + i % USERS, start_ms + i)))
    return rows


def expected_changes(rows: list[tuple[str, int, dict]], repo: Path) -> int:
    """How many changes the segment job must store: the pure core over the same rows."""
    logic = SegmentLogic(load_definitions(repo).segment(SEGMENT).rules())
    by_user: dict[int, list[SegmentEvent]] = {}
    for kind, at, row in rows:
        by_user.setdefault(row["user_id"], []).append(SegmentEvent(kind, row["event_id"], at, row))
    return sum(len(replay(logic, events)[1]) for events in by_user.values())


def throughput(args, bench: Bench) -> dict:
    rows = signal_rows(args.events, int(time.time() * 1000) - 3_600_000)
    total = expected_changes(rows, bench.repo)
    log(f"producing {len(rows)} signal rows ({total} membership changes expected)")
    put_signal_rows(bench.stack.kafka, bench.prefix, rows)

    log("baseline: bare PyFlink job over the search signal topic")
    searches = sum(1 for kind, _, _ in rows if kind == "search")
    bare_rate = bare_job_rate(
        bench.stack,
        f"{bench.prefix}usp.signal.search",
        bench.run,
        searches,
        bench.work,
        bench.raw_redis,
    )

    log("segment job")
    keys = [bench.client.store.key(VIEW, str(u)) for u in range(1, USERS + 1)]

    def stored() -> int:
        with bench.raw_redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.zcard(k)
            return sum(pipe.execute())

    samples, rate = drain(bench, [VIEW], stored, total, 900)
    return {
        "signal_rows": len(rows),
        "membership_changes": total,
        "stored_changes": samples[-1][1] if samples else 0,
        "segment_job_events_per_s": None if rate is None else round(rate),
        "bare_job_events_per_s": None if bare_rate is None else round(bare_rate),
        "ratio_segment_to_bare": None if not rate or not bare_rate else ratio(rate, bare_rate),
    }


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
    args = parse_args(["throughput", "freshness", "listing"])
    members = 100_000 if args.quick else 1_000_000
    bench = prepare("segments", "seg", ("search", "booking"), segments=True, sessions=False)
    result: dict = {"benchmark": "segments", "machine": machine_info(bench.raw_redis)}
    try:
        if args.only in (None, "throughput"):
            result["throughput"] = throughput(args, bench)
            log(f"throughput: {result['throughput']}")
        if args.only in (None, "freshness"):
            probe = Probe("search", "events.search", f"{VIEW}:in_segment", "in_segment")
            result["freshness_trigger_to_in_segment"] = freshness(bench, probe, args.quick)
            log(f"freshness: {result['freshness_trigger_to_in_segment']}")
        if args.only in (None, "listing"):
            result["members_listing"] = listing(bench.stack.redis, members, 200)
    finally:
        result["cleanup"] = bench.finish()
    emit(result)


if __name__ == "__main__":
    main()
