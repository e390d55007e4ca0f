"""Write throughput through Feast: ours vs Feast's stock ``redis`` online store.

Both stores receive the very same 10k-row DataFrames through
``FeatureStore.write_to_online_store(view, df)`` in the same run, alternating which goes first.
Every frame holds one new, newer event per user, so the stock store's read-before-write finds
an existing hash and never skips a row (it writes every row, as ours does).

The time spent inside ``online_write_batch`` (the online store itself) is measured too, so the
result separates the store from Feast's DataFrame-to-proto conversion that both pay.

Run: ``.venv/bin/python benchmarks/bench_write.py [--quick]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import _common as c

GOAL_RATIO = 1.0  # ours / stock rows per second through write_to_online_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 frames, 2k rows")
    parser.add_argument("--frames", type=int, default=20, help="measured frames per store")
    parser.add_argument("--rows", type=int, default=10_000, help="rows per frame (one per user)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured frames per store")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.frames, args.rows, args.warmup = 3, 2_000, 1
    url = c.redis_url(args.redis)

    import redis

    client = redis.Redis.from_url(url)
    result: dict[str, Any] = {
        "benchmark": "write_throughput",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "frames": args.frames,
            "rows_per_frame": args.rows,
            "warmup_frames": args.warmup,
            "fields": len(c.FIELDS) + 1,
            "api": "FeatureStore.write_to_online_store(view, df)",
        },
    }
    result.update(c.run_ours_vs_stock("w", args, url, client, run))
    c.emit(result)


def run(args: argparse.Namespace, raw: Any, stores: dict[str, Any]) -> dict[str, Any]:
    inside = {
        name: c.time_calls(fs._get_provider().online_store, "online_write_batch")
        for name, fs in stores.items()
    }

    rng = random.Random(args.seed)
    users = list(range(1, args.rows + 1))
    # Event times inside the view's 1-day TTL and 30-day retention, increasing per frame.
    start = datetime.now(UTC) - timedelta(hours=12)
    total = args.warmup + args.frames
    c.log(f"building {total} frames of {args.rows} rows")
    frames = []
    for index in range(total):
        rng.shuffle(users)
        frames.append(c.make_frame(users, start + timedelta(seconds=index), f"w{index}", rng))

    for index in range(args.warmup):
        for fs in stores.values():
            fs.write_to_online_store(c.SIGNAL, frames[index])
    for spent in inside.values():
        spent.clear()

    elapsed: dict[str, list[int]] = {"ours": [], "stock": []}
    cpu: dict[str, int] = {"ours": 0, "stock": 0}
    window = c.CpuWindow(raw)
    for index in range(args.warmup, total):
        # Alternate who writes first so neither always meets a cold (or warm) Redis.
        order = ["ours", "stock"] if index % 2 == 0 else ["stock", "ours"]
        frame = frames[index]
        for name in order:
            cpu_started = time.process_time_ns()
            started = time.perf_counter_ns()
            stores[name].write_to_online_store(c.SIGNAL, frame)
            elapsed[name].append(time.perf_counter_ns() - started)
            cpu[name] += time.process_time_ns() - cpu_started
        c.log(
            f"frame {index - args.warmup + 1}/{args.frames}: "
            + ", ".join(f"{n} {elapsed[n][-1] / 1e6:.0f} ms" for n in order)
        )

    machine = window.stop()
    rows = args.frames * args.rows
    summary: dict[str, Any] = {}
    for name in ("ours", "stock"):
        wall = sum(elapsed[name])
        store_ns = sum(inside[name])
        summary[name] = {
            "rows_per_s": round(rows / (wall / 1e9)),
            "frame_ms_median": round(statistics.median(elapsed[name]) / 1e6, 1),
            "frame_ms_min": round(min(elapsed[name]) / 1e6, 1),
            "frame_ms_max": round(max(elapsed[name]) / 1e6, 1),
            # CPU of this (client) process only; less sensitive to other load than wall time.
            "client_cpu_us_per_row": round(cpu[name] / rows / 1000, 2),
            "online_write_batch_rows_per_s": round(rows / (store_ns / 1e9)),
            "online_write_batch_share_of_wall": round(store_ns / wall, 3),
        }
    ours, stock = summary["ours"], summary["stock"]
    ratio = c.ratio(ours["rows_per_s"], stock["rows_per_s"])
    return {
        "results": summary,
        "ratios": {
            "write_to_online_store_rows_per_s_ours_over_stock": ratio,
            # Less sensitive to a few slow frames (other load on a shared machine).
            "median_frame_speed_ours_over_stock": c.ratio(
                stock["frame_ms_median"], ours["frame_ms_median"]
            ),
            "online_write_batch_rows_per_s_ours_over_stock": c.ratio(
                ours["online_write_batch_rows_per_s"], stock["online_write_batch_rows_per_s"]
            ),
        },
        "cpu_during_measurement": machine,
        "loadavg_1m_after": c.load_after(),
        "goal": {
            "metric": "write_to_online_store rows/s, ours / stock",
            "target": f">= {GOAL_RATIO}",
            "measured": ratio,
            "met": ratio is not None and ratio >= GOAL_RATIO,
        },
    }


if __name__ == "__main__":
    main()
