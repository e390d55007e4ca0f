"""``get_online_features`` latency, 1 entity x 10 features: ours vs Feast's stock ``redis``.

Both repositories get the same rows through ``write_to_online_store`` (several events per
user, so our store holds history while the stock store keeps the latest only), then each
measured iteration asks both stores for the same random user, in random order. The time spent
inside the online store's ``_read_features_per_fv`` is recorded as well: that is where each
store reads Redis and fills the response (stock Redis overrides it with one HMGET pipeline;
ours inherits Feast's generic version, which calls ``online_read``). So Feast's own
per-request overhead, which both pay, can be told apart from the store's.

Run: ``.venv/bin/python benchmarks/bench_online_read.py [--quick]``
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import _common as c

GOAL_RATIO = 1.1  # ours / stock, p50 and p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1k users, 300 queries")
    parser.add_argument("--users", type=int, default=10_000, help="users loaded")
    parser.add_argument("--history", type=int, default=5, help="events written per user")
    parser.add_argument("--queries", type=int, default=5_000, help="measured queries per store")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured queries per store")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.quick:
        args.users, args.history, args.queries, args.warmup = 1_000, 2, 300, 50
    url = c.redis_url(args.redis)

    import redis

    client = redis.Redis.from_url(url)
    result: dict[str, Any] = {
        "benchmark": "get_online_features_latency",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "users": args.users,
            "events_per_user": args.history,
            "queries_per_store": args.queries,
            "warmup_per_store": args.warmup,
            "entities_per_request": 1,
            "features": c.FEATURE_REFS,
            "api": "FeatureStore.get_online_features(features, entity_rows=[{'user_id': id}])",
        },
    }
    result.update(c.run_ours_vs_stock("r", args, url, client, run))
    c.emit(result)


def run(args: argparse.Namespace, raw: Any, stores: dict[str, Any]) -> dict[str, Any]:

    rng = random.Random(args.seed)
    users = list(range(1, args.users + 1))
    start = datetime.now(UTC) - timedelta(hours=6)
    c.log(f"loading {args.history} events for each of {args.users} users into both stores")
    for index in range(args.history):
        rng.shuffle(users)
        frame = c.make_frame(users, start + timedelta(minutes=index), f"r{index}", rng)
        for fs in stores.values():
            fs.write_to_online_store(c.SIGNAL, frame)

    def query(name: str, user: int) -> Any:
        return stores[name].get_online_features(
            features=c.FEATURE_REFS, entity_rows=[{"user_id": user}]
        )

    # Same answers from both, or the comparison means nothing.
    mismatches = []
    for user in rng.sample(users, 20):
        ours, stock = query("ours", user).to_dict(), query("stock", user).to_dict()
        if ours != stock:
            mismatches.append({"user": user, "ours": ours, "stock": stock})
    if mismatches:
        c.log(f"WARNING: stores disagree for {len(mismatches)} of 20 users")

    for _ in range(args.warmup):
        user = rng.choice(users)
        for name in stores:
            query(name, user)
    inside = {
        name: c.time_calls(fs._get_provider().online_store, "_read_features_per_fv")
        for name, fs in stores.items()
    }

    c.log(f"measuring {args.queries} queries per store")
    samples: dict[str, list[int]] = {"ours": [], "stock": []}
    gc.collect()
    window = c.CpuWindow(raw)
    for index in range(args.queries):
        user = rng.choice(users)
        order = ["ours", "stock"] if rng.random() < 0.5 else ["stock", "ours"]
        for name in order:
            started = time.perf_counter_ns()
            query(name, user)
            samples[name].append(time.perf_counter_ns() - started)
        if (index + 1) % max(1, args.queries // 5) == 0:
            c.log(f"  {index + 1}/{args.queries}")

    cpu = window.stop()
    results = {name: c.percentiles(samples[name]) for name in samples}
    store_only = {name: c.percentiles(inside[name]) for name in inside}
    p50 = c.ratio(results["ours"]["p50_us"], results["stock"]["p50_us"])
    p99 = c.ratio(results["ours"]["p99_us"], results["stock"]["p99_us"])
    return {
        "values_match": not mismatches,
        "mismatches": mismatches[:3],
        "results": results,
        "store_read_path_only": store_only,
        "ratios": {
            "get_online_features_p50_ours_over_stock": p50,
            "get_online_features_p99_ours_over_stock": p99,
            "store_read_path_p50_ours_over_stock": c.ratio(
                store_only["ours"]["p50_us"], store_only["stock"]["p50_us"]
            ),
            "store_read_path_p99_ours_over_stock": c.ratio(
                store_only["ours"]["p99_us"], store_only["stock"]["p99_us"]
            ),
        },
        "cpu_during_measurement": cpu,
        "loadavg_1m_after": c.load_after(),
        "goal": {
            "metric": "get_online_features latency ours / stock (p50 and p99)",
            "target": f"<= {GOAL_RATIO}",
            "measured": {"p50": p50, "p99": p99},
            "met": all(r is not None and r <= GOAL_RATIO and math.isfinite(r) for r in (p50, p99)),
        },
    }


if __name__ == "__main__":
    main()
