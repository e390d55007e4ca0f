"""``SignalClient.recent(limit=50)`` latency over 1M stored events (in-process).

Loads ``--events`` events spread evenly over ``--users`` users through
``VersionedStore.append`` (the write path the online store plugin uses, retention included)
in pipelined batches, reporting the load rate and Redis ``used_memory`` growth. Then, for
random users, times in random order:

* ``SignalClient.recent(user, "bench", limit=50)``: the public query API (the goal);
* ``VersionedStore.recent(...)``: the store call alone (Lua script + decoding);
* the baseline: a plain ``ZRANGE key +inf -inf BYSCORE REV LIMIT 0 50`` on the same key, with
  no version collapsing and no decoding.

No Feast import: the query path does not need it.

Run: ``.venv/bin/python benchmarks/bench_recent.py [--quick] [--events N] [--users N]``
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

GOAL_P99_US = 2_000  # SignalClient.recent p99 <= 2 ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20k events, 200 users")
    parser.add_argument("--events", type=int, default=1_000_000, help="events stored in total")
    parser.add_argument("--users", type=int, default=10_000, help="users the events spread over")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per append() pipeline")
    parser.add_argument("--limit", type=int, default=50, help="events per query")
    parser.add_argument("--queries", type=int, default=10_000, help="measured queries per call")
    parser.add_argument("--warmup", type=int, default=1_000, help="unmeasured queries per call")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.events, args.users, args.queries, args.warmup = 20_000, 200, 1_000, 100
    url = c.redis_url(args.redis)

    import redis

    client = redis.Redis.from_url(url)
    result: dict[str, Any] = {
        "benchmark": "signal_client_recent_latency",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "events": args.events,
            "users": args.users,
            "events_per_user": args.events // args.users,
            "append_batch_rows": args.batch,
            "limit": args.limit,
            "queries_per_call": args.queries,
            "warmup_per_call": args.warmup,
            "fields_per_event": len(c.FIELDS) + 1,
        },
    }
    project = c.unique_project("recent")
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            result.update(run(args, url, client, Path(tmp), project))
        finally:
            removed = c.drop_ours(url, project)
            c.log(f"cleanup: {removed} keys")
            result["cleanup"] = {
                "keys_removed": removed,
                "keys_left": c.count_keys(client, f"usp:{project}:*".encode()),
            }
    c.emit(result)


def run(args: argparse.Namespace, url: str, raw: Any, tmp: Path, project: str) -> dict[str, Any]:
    from usp_feast.query import SignalClient
    from usp_feast.versions import decode_member

    repo = c.write_repo(tmp, project, c.ours_store_config(url))
    client = SignalClient.from_repo(repo)
    store = client.store
    retention = client.spec(c.SIGNAL).retention

    per_user = args.events // args.users
    users = list(range(1, args.users + 1))
    rng = random.Random(args.seed)

    memory_before = raw.info("memory")["used_memory"]
    c.log(f"loading {per_user * args.users} events ({per_user}/user) in batches of {args.batch}")
    load = c.load_events(
        store,
        users=args.users,
        per_user=per_user,
        batch_rows=args.batch,
        retention=retention,
        rng=rng,
    )
    memory_after = raw.info("memory")["used_memory"]
    loaded, append_ns, load_wall_ns = load["events"], load["append_ns"], load["wall_ns"]
    c.log(f"loaded {loaded} events: {loaded / (append_ns / 1e9):,.0f} events/s in append()")

    def ours(user: int) -> Any:
        return client.recent(user, c.SIGNAL, limit=args.limit)

    def store_only(user: int) -> Any:
        return store.recent(c.SIGNAL, str(user), limit=args.limit)

    def baseline(user: int) -> Any:
        return raw.zrange(
            store.key(c.SIGNAL, str(user)),
            "+inf",
            "-inf",
            desc=True,
            byscore=True,
            offset=0,
            num=args.limit,
        )

    # Without duplicate versions the collapse must give exactly the baseline's events.
    checked = rng.sample(users, min(50, len(users)))
    same = all(
        [e.event_id for e in ours(u)] == [decode_member(m).event_id for m in baseline(u)]
        for u in checked
    )
    expected = min(args.limit, per_user)
    full = all(len(ours(u)) == expected for u in checked)
    if not (same and full):
        c.log("WARNING: recent() disagrees with the plain ZRANGE baseline")

    calls = {"signal_client_recent": ours, "store_recent": store_only, "baseline_zrange": baseline}
    for _ in range(args.warmup):
        user = rng.choice(users)
        for call in calls.values():
            call(user)
    samples: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    c.log(f"measuring {args.queries} queries per call")
    stats_before = raw.info("commandstats")
    gc.collect()
    window = c.CpuWindow(raw)
    for index in range(args.queries):
        user = rng.choice(users)
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter_ns()
            calls[name](user)
            samples[name].append(time.perf_counter_ns() - started)
        if (index + 1) % max(1, args.queries // 5) == 0:
            c.log(f"  {index + 1}/{args.queries}")

    cpu = window.stop()
    stats_after = raw.info("commandstats")
    results = {name: c.percentiles(samples[name]) for name in names}
    ours_p, base_p, store_p = (
        results["signal_client_recent"],
        results["baseline_zrange"],
        results["store_recent"],
    )
    delta = memory_after - memory_before
    return {
        "load": {
            "events": loaded,
            "append_events_per_s": round(loaded / (append_ns / 1e9)),
            "wall_events_per_s_incl_generation": round(loaded / (load_wall_ns / 1e9)),
            "append_seconds": round(append_ns / 1e9, 2),
            "redis_used_memory_before_mb": round(memory_before / 2**20, 1),
            "redis_used_memory_after_mb": round(memory_after / 2**20, 1),
            "redis_used_memory_delta_mb": round(delta / 2**20, 1),
            "redis_bytes_per_event": round(delta / loaded, 1) if loaded else None,
        },
        "results_match_baseline": same,
        "results_full_limit": full,
        "results": results,
        # Server-side time per command during the measured loop (INFO commandstats deltas;
        # the Redis is shared, so other clients' calls of the same commands count too).
        "redis_server_us_per_call": {
            command: _per_call(stats_before, stats_after, command)
            for command in ("evalsha", "zrange")
        },
        "ratios": {
            "recent_over_zrange_p50": c.ratio(ours_p["p50_us"], base_p["p50_us"]),
            "recent_over_zrange_p99": c.ratio(ours_p["p99_us"], base_p["p99_us"]),
            "store_recent_over_zrange_p50": c.ratio(store_p["p50_us"], base_p["p50_us"]),
            "store_recent_over_zrange_p99": c.ratio(store_p["p99_us"], base_p["p99_us"]),
        },
        "cpu_during_measurement": cpu,
        "loadavg_1m_after": c.load_after(),
        "goal": {
            "metric": "SignalClient.recent(limit=50) p99, in-process",
            "target": f"<= {GOAL_P99_US} us",
            "measured_p99_us": ours_p["p99_us"],
            "met": ours_p["p99_us"] <= GOAL_P99_US,
        },
    }


def _per_call(before: dict[str, Any], after: dict[str, Any], command: str) -> float | None:
    key = f"cmdstat_{command}"
    calls = after.get(key, {}).get("calls", 0) - before.get(key, {}).get("calls", 0)
    usec = after.get(key, {}).get("usec", 0) - before.get(key, {}).get("usec", 0)
    return round(usec / calls, 1) if calls else None


if __name__ == "__main__":
    main()
