"""Join signal job: events/s over both inputs, joined-row freshness, state size per key.

1. Throughput: N raw events are put on fresh ``events.listing_update`` (first one update of
   each of L listings, then half the rest) and ``events.wishlist_add`` topics (the other half:
   adds of U users on random listings, each after an update of its listing), event time
   increasing by 1 ms from 5 minutes ago; then ONE job running ``wishlist_enriched`` (RocksDB
   state backend, checkpoints every 2 s) drains them. Progress is the number of joined rows
   on ``usp.signal.wishlist_enriched`` (one per add); the rate is taken between 10 % and 90 %
   of the adds and scaled to input events (adds + updates) per second. Baseline in the same
   run: the bare PyFlink job (Kafka → Python map → discard) over the same add topic. The size
   of the job's last RocksDB checkpoint is reported too.
2. Freshness: the same job; per new user one listing update and then that user's wishlist
   add on the listing, at a steady 200 raw events/s (the first 15 s are warm-up, not
   measured); a reader polls Feast (``get_online_features(["wishlist_enriched:price"])``)
   until each probe user's joined row is served: produce of the add → served. The join
   answers once the watermark passes the add's time, so this includes the definition's
   2-second ``out_of_orderness`` bound by design.
3. State size vs distinct keys (pure core, no services): K listing keys, each updated 5 times
   (and wishlisted 5 times) during 10 days somewhere in 60 days of event time, fed in
   event-time order with the watermark following; the pickled ``JoinState`` bytes of every
   key still holding state at the end, with ``state_ttl`` 7 days versus no TTL (100 years).

    .venv/bin/python benchmarks/bench_joins.py [--quick] [--only throughput|freshness|state]
"""

from __future__ import annotations

import heapq
import pickle
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import orjson
from _common import emit, load_after, log, machine_info, ratio
from _keyed import Bench, Probe, drain, freshness, parse_args, prepare
from bench_streaming import bare_job_rate

from usp_feast.joins import JoinLogic, JoinRules, JoinState, SideRecord
from usp_feast.kafka_io import consume_all, end_offsets, producer
from usp_feast.traffic import iso
from usp_feast.versions import from_micros

JOIN = "wishlist_enriched"
LISTINGS, USERS = 2000, 2000
DAY_MS = 86_400_000


def update_event(event_id: str, at_ms: int, listing: int, rng: random.Random) -> bytes:
    """A listing update as producers send it."""
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_ts": iso(from_micros(at_ms * 1000)),
            "listing_id": listing,
            "price": round(rng.uniform(40, 600), 2),
            "rating": round(rng.uniform(3, 5), 1),
            "available": rng.random() < 0.9,
        }
    )


def add_event(event_id: str, at_ms: int, user: int, listing: int) -> bytes:
    """A wishlist add as producers send it."""
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_ts": iso(from_micros(at_ms * 1000)),
            "user_id": user,
            "listing_id": listing,
        }
    )


def put_raw_events(bench: Bench, count: int) -> int:
    """``count`` updates and adds (see the module docstring); returns the number of adds."""
    rng = random.Random(7)
    start_ms = int(time.time() * 1000) - 300_000
    sender = producer(bench.stack.kafka, **{"linger.ms": 50, "batch.num.messages": 10_000})
    updates, adds = f"{bench.prefix}events.listing_update", f"{bench.prefix}events.wishlist_add"
    added = 0
    for i in range(count):
        at_ms = start_ms + i
        if i < LISTINGS or i % 2 == 0:
            listing = i + 1 if i < LISTINGS else rng.randrange(LISTINGS) + 1
            sender.produce(updates, update_event(f"u-{i}", at_ms, listing, rng))
        else:
            sender.produce(
                adds, add_event(f"a-{i}", at_ms, i % USERS + 1, rng.randrange(LISTINGS) + 1)
            )
            added += 1
        if i % 10_000 == 0:
            sender.flush(30)
    sender.flush(60)
    return added


def throughput(bench: Bench, count: int) -> dict:
    """Part 1: drain ``count`` raw events through the join job; the bare job as baseline."""
    log(f"putting {count} raw events on the join's input topics")
    adds = put_raw_events(bench, count)
    topic = f"{bench.prefix}usp.signal.{JOIN}"

    def joined_rows() -> int:
        return sum(end_offsets(bench.stack.kafka, topic).values())

    log(f"draining {adds} wishlist adds and {count - adds} listing updates")
    samples, rows_per_s = drain(bench, [f"join_{JOIN}"], joined_rows, adds, 900)
    checkpoint = _checkpoint_bytes(bench.work / "checkpoints-1")
    # Correctness of the run: every add found an update before it, nothing came too late.
    late = sum(end_offsets(bench.stack.kafka, f"{bench.prefix}usp.late.join.{JOIN}").values())
    unmatched = sum(
        orjson.loads(message)["price"] is None
        for message in consume_all(bench.stack.kafka, topic, idle_seconds=2)
    )
    log("baseline: the bare job over the add topic")
    bare = bare_job_rate(
        bench.stack,
        f"{bench.prefix}events.wishlist_add",
        bench.run,
        adds,
        bench.work,
        bench.raw_redis,
    )
    events_per_s = None if rows_per_s is None else rows_per_s * count / adds
    return {
        "events": count,
        "wishlist_adds": adds,
        "listing_updates": count - adds,
        "distinct_listings": LISTINGS,
        "joined_rows_per_s": None if rows_per_s is None else round(rows_per_s),
        "input_events_per_s": None if events_per_s is None else round(events_per_s),
        "baseline_bare_job_rows_per_s": None if bare is None else round(bare),
        "ratio_joined_rows_to_bare": ratio(rows_per_s or 0, bare or 0),
        "late_events": late,
        "rows_without_a_match": unmatched,
        "rocksdb_checkpoint_bytes": checkpoint,
        "samples": len(samples),
    }


def _checkpoint_bytes(folder: Path) -> int | None:
    """Bytes of the job's newest completed checkpoint (incremental: the files it refers to)."""
    from usp_feast.job_metrics import latest_checkpoint

    newest = latest_checkpoint(folder)
    if newest is None:
        return None
    job = newest.parent
    files = [*newest.rglob("*"), *(job / "shared").rglob("*")]
    return sum(f.stat().st_size for f in files if f.is_file())


def join_events(user: int) -> list[tuple[str, bytes]]:
    """A new user's events for the freshness loop: an update of a listing, then the add."""
    now_ms = int(time.time() * 1000)
    listing = 500_000 + user % 1000
    rng = random.Random(user)
    return [
        ("events.listing_update", update_event(f"fu-{user}", now_ms - 1, listing, rng)),
        ("events.wishlist_add", add_event(f"fa-{user}", now_ms, user, listing)),
    ]


def state_size(keys: int, ttl_days: float) -> dict:
    """Part 3: pickled state of every key left after 60 days of input, in event-time order."""
    rng = random.Random(keys)
    span = 60 * DAY_MS
    logic = JoinLogic(JoinRules(how="latest", state_ttl_ms=int(ttl_days * DAY_MS)))
    events = []
    for key in range(keys):
        # A listing is updated (and wishlisted) during 10 days somewhere in the 60, then quiet.
        live_from = rng.randrange(span - 10 * DAY_MS)
        for n in range(5):
            at = live_from + rng.randrange(10 * DAY_MS)
            events.append((at, 1, key, f"u{key}-{n}"))
            events.append((at + rng.randrange(DAY_MS), 0, key, f"a{key}-{n}"))
    events.sort()
    states: dict[int, JoinState] = {}
    deadlines: list[tuple[int, int]] = []
    for at, is_right, key, event_id in events:
        # Fire what is due before time moves to ``at`` (the job's timers do this).
        while deadlines and deadlines[0][0] <= at:
            due, due_key = heapq.heappop(deadlines)
            state = states.get(due_key)
            if state is None:
                continue
            logic.fire(state, due)
            next_due = logic.deadline(state)
            if next_due is None:
                del states[due_key]
            elif next_due > due:
                heapq.heappush(deadlines, (next_due, due_key))
        state = states.setdefault(key, JoinState())
        fields = {"price": 100.0, "rating": 4.5, "available": True} if is_right else {"user_id": 1}
        record = SideRecord(at, event_id, "2026-01-01T00:00:00.000000Z", fields)
        (logic.add_right if is_right else logic.add_left)(state, record, at)
        due = logic.deadline(state)
        if due is not None:
            heapq.heappush(deadlines, (due, key))
    sizes = [len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in states.values()]
    return {
        "distinct_keys": keys,
        "keys_with_state": len(sizes),
        "state_bytes": sum(sizes),
        "bytes_per_key_with_state": round(sum(sizes) / len(sizes)) if sizes else 0,
    }


def main() -> None:
    """Run the parts asked for and print one JSON object."""
    args = parse_args(("throughput", "freshness", "state"))
    result: dict = {"benchmark": "joins", "machine": machine_info(), "load_before": load_after()}
    if args.only in (None, "state"):
        log("state size vs distinct keys (pure core)")
        result["state_size"] = {
            f"ttl_{label}": [state_size(k, ttl) for k in (1000, 10_000)]
            + ([] if args.quick else [state_size(50_000, ttl)])
            for label, ttl in (("7d", 7), ("none", 36_500))
        }
    if args.only in (None, "throughput", "freshness"):
        bench = prepare("joins", "joins", [], segments=False, sessions=False, joins=True)
        try:
            if args.only in (None, "throughput"):
                result["throughput"] = throughput(bench, args.events)
            if args.only in (None, "freshness"):
                probe = Probe(
                    signal=JOIN,
                    raw_topic="events.wishlist_add",
                    feature=f"{JOIN}:price",
                    label="served",
                    events=join_events,
                )
                result["freshness"] = freshness(bench, probe, args.quick)
        finally:
            result["cleanup"] = bench.finish()
    emit(result)


if __name__ == "__main__":
    main()
