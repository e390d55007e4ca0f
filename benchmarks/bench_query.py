"""Query-time computation: filtered ``recent``, on-demand sessions and aggregates (in-process).

Stores ``--events-per-user`` events for each of ``--users`` users through
``VersionedStore.append``, all inside the last 24 hours and grouped in ``--sessions`` bursts per
user (30 minutes each, at least an hour apart, so a 30-minute gap cuts them into exactly that
many sessions). The int field ``f2`` takes the values 0..9 uniformly, so ``f2 == 3`` matches
10 % of the events. Then, for random users, times in random order per round (the same user for
every variant of a round):

* the baseline: ``SignalClient.recent(user, "bench", limit=50)``, unfiltered;
* ``recent(..., limit=50, where="f2 == 3")``: the filter matches 10 %, so Redis scans and
  decodes ~500 members to fill the page;
* ``sessions(user, "bench", gap=30 min, within=24 h)``: sessionizing the user's 1,000 events;
* ``aggregate(user, "bench", [count, count_distinct:f7, top_k:f7:3], within=24 h)``;

and two diagnostics that explain the others: ``recent(limit=50, where="f2 >= 0")`` (a filter
that matches everything: 50 members decoded by the script instead of ~500) and
``records(limit=1000, within=24 h)`` (the window read that sessions and aggregates start with,
without their Python work). Afterwards a short pass per variant, one variant at a time, reads
Redis' own time per script call (``INFO commandstats``), and throw-away scripts split a
filtered page's server time per member: fetching, walking (event ids), decoding the JSON with
cjson, evaluating the predicate.

No Feast import: the query path does not need it.

Run: ``.venv/bin/python benchmarks/bench_query.py [--quick] [--users N] [--events-per-user N]``
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common as c
from bench_recent import _per_call

FILTER_FIELD = "f2"  # overridden to 0..9 uniformly, so `f2 == 3` keeps 10 % of the events
FILTER_10PCT = f"{FILTER_FIELD} == 3"
FILTER_ALL = f"{FILTER_FIELD} >= 0"
# String equality (1 city in 8, 12.5 %): the script screens members on their JSON text first.
FILTER_CITY = 'f7 == "Oslo"'
AGGREGATES = ["count", "count_distinct:f7", "top_k:f7:3"]
GAP = timedelta(minutes=30)
WINDOW = timedelta(hours=24)
SESSION_LENGTH_US = 30 * 60_000_000
# The events lie between 23 h and 5 min before the load, so they stay inside the 24 h window
# for the whole run.
OLDEST_US, NEWEST_US = 23 * 3_600_000_000, 5 * 60_000_000
BASELINE = "recent_unfiltered"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 users, 300 rounds")
    parser.add_argument("--users", type=int, default=200, help="users with a full history")
    parser.add_argument("--events-per-user", type=int, default=1_000, help="in the last 24 h")
    parser.add_argument("--sessions", type=int, default=8, help="activity bursts per user")
    parser.add_argument("--batch", type=int, default=20_000, help="rows per append() call")
    parser.add_argument("--limit", type=int, default=50, help="events per recent() page")
    parser.add_argument("--rounds", type=int, default=2_500, help="measured calls per variant")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured rounds")
    parser.add_argument("--redis-pass", type=int, default=200, help="calls per variant, alone")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.quick:
        args.users, args.rounds, args.warmup, args.redis_pass = 20, 300, 30, 50
    if not 0 < args.sessions <= args.events_per_user:
        parser.error("--sessions must be between 1 and --events-per-user")
    url = c.redis_url(args.redis)

    import redis

    raw = redis.Redis.from_url(url)
    result: dict[str, Any] = {
        "benchmark": "query_time_computation_latency",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(raw),
        "params": {
            "users": args.users,
            "events_per_user": args.events_per_user,
            "sessions_per_user": args.sessions,
            "events": args.users * args.events_per_user,
            "limit": args.limit,
            "filter": FILTER_10PCT,
            "filter_selectivity": 0.1,
            "session_gap": str(GAP),
            "window": str(WINDOW),
            "aggregates": AGGREGATES,
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "redis_pass_calls_per_variant": args.redis_pass,
        },
    }
    project = c.unique_project("query")
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            result.update(measure(args, url, raw, Path(tmp), project))
        finally:
            result["cleanup"] = cleanup(url, raw, project)
    c.emit(result)


def cleanup(url: str, raw: Any, project: str) -> dict[str, int]:
    """Delete the run's keys and count what is left (must be 0)."""
    removed = c.drop_ours(url, project)
    left = c.count_keys(raw, f"usp:{project}:*".encode())
    c.log(f"cleanup: {removed} keys removed, {left} left")
    return {"keys_removed": removed, "keys_left": left}


def session_times(rng: random.Random, count: int, sessions: int, now_us: int) -> list[int]:
    """``count`` distinct event times (µs) in ``sessions`` bursts of 30 minutes.

    Burst ``i`` starts inside slot ``i`` of the 23 h span and ends at least an hour before the
    next slot, so consecutive bursts are more than ``GAP`` apart while events inside a burst
    (≥ 100 in 30 minutes at the default size) never are.
    """
    span = OLDEST_US - NEWEST_US
    slot = span // sessions
    room = slot - SESSION_LENGTH_US - 3_600_000_000
    if room <= 0:
        raise SystemExit(f"--sessions {sessions} too many for 30-minute bursts an hour apart")
    times: set[int] = set()
    for index in range(sessions):
        start = now_us - OLDEST_US + index * slot + rng.randrange(room)
        size = count // sessions + (index < count % sessions)
        while size:
            moment = start + rng.randrange(SESSION_LENGTH_US)
            if moment not in times:
                times.add(moment)
                size -= 1
    return sorted(times)


def load_history(store: Any, args: argparse.Namespace, retention: Any, rng: random.Random) -> int:
    """Append every user's history; returns the ns spent inside ``append()``."""
    from usp_feast.store import now_micros
    from usp_feast.versions import Record

    now_us = now_micros()
    pending: list[tuple[str, Any]] = []
    spent = 0
    for user in range(1, args.users + 1):
        for number, event_ts in enumerate(
            session_times(rng, args.events_per_user, args.sessions, now_us)
        ):
            values = c.field_values(rng)
            values[FILTER_FIELD] = rng.randrange(10)
            event_id = f"q{user}-{number}"
            pending.append(
                (str(user), Record(event_id, event_ts, now_us, {"event_id": event_id, **values}))
            )
        if len(pending) >= args.batch or user == args.users:
            started = time.perf_counter_ns()
            c.log(f"  appending {len(pending)} events (users up to {user})")
            store.append(c.SIGNAL, pending, retention=retention)
            spent += time.perf_counter_ns() - started
            pending = []
    return spent


def variants(client: Any, limit: int) -> dict[str, Callable[[int], Any]]:
    """The timed calls, by name: baseline first."""
    return {
        BASELINE: lambda u: client.recent(u, c.SIGNAL, limit=limit),
        "recent_filter_10pct": lambda u: client.recent(
            u, c.SIGNAL, limit=limit, where=FILTER_10PCT
        ),
        "recent_filter_city": lambda u: client.recent(u, c.SIGNAL, limit=limit, where=FILTER_CITY),
        "sessions_24h": lambda u: client.sessions(u, c.SIGNAL, gap=GAP, within=WINDOW),
        "aggregate_24h": lambda u: client.aggregate(u, c.SIGNAL, AGGREGATES, within=WINDOW),
        # Diagnostics.
        "diag_recent_filter_all": lambda u: client.recent(
            u, c.SIGNAL, limit=limit, where=FILTER_ALL
        ),
        "diag_window_read_1000": lambda u: client.records(u, c.SIGNAL, within=WINDOW, limit=1000),
    }


def check(client: Any, args: argparse.Namespace, users: list[int]) -> dict[str, Any]:
    """Results are right, and how many members the filtered page scans (from the full history)."""
    calls = variants(client, args.limit)
    page_ok = sessions_ok = aggregate_ok = True
    decoded: list[int] = []
    for user in users:
        history = client.records(user, c.SIGNAL, within=WINDOW, limit=1000)
        matches = [i for i, r in enumerate(history) if r.fields[FILTER_FIELD] == 3]
        expected = [history[i].event_id for i in matches[: args.limit]]
        page_ok &= [e.event_id for e in calls["recent_filter_10pct"](user)] == expected
        if len(matches) >= args.limit:
            decoded.append(matches[args.limit - 1] + 1)
        sessions_ok &= len(calls["sessions_24h"](user)) == args.sessions
        aggregate_ok &= (
            calls["aggregate_24h"](user)["count"] == len(history) == args.events_per_user
        )
    if not (page_ok and sessions_ok and aggregate_ok):
        c.log("WARNING: a query-time result disagrees with the stored history")
    decoded.sort()
    return {
        "filtered_page_matches_python_filter": page_ok,
        "sessions_per_user_as_generated": sessions_ok,
        "aggregate_count_is_all_events": aggregate_ok,
        "users_checked": len(users),
        "users_with_a_full_filtered_page": len(decoded),
        # The script decodes members until the page is full: the 50th match's position.
        "filter_members_decoded": {
            "mean": round(sum(decoded) / len(decoded), 1) if decoded else None,
            "min": decoded[0] if decoded else None,
            "max": decoded[-1] if decoded else None,
            "share_past_first_512_batch": (
                round(sum(d > 512 for d in decoded) / len(decoded), 3) if decoded else None
            ),
        },
    }


def redis_pass(
    raw: Any, calls: dict[str, Callable[[int], Any]], users: list[int], n: int, rng: random.Random
) -> dict[str, float | None]:
    """Redis' own µs per script call, one variant at a time (commandstats deltas)."""
    out: dict[str, float | None] = {}
    for name, call in calls.items():
        before = raw.info("commandstats")
        for _ in range(n):
            call(rng.choice(users))
        out[name] = _per_call(before, raw.info("commandstats"), "evalsha")
    return out


# Diagnostic scripts: where a filtered page's time goes inside Redis. Each step adds one part of
# what recent.lua does per member when filtering (it fetches 512 members per ZRANGE then): fetch,
# then walk (version check, event id, `seen` table), then cjson decoding, then the predicate.
LUA_STEPS = {
    "fetch": "",
    "walk": (
        "  if string.sub(m, 1, 16) <= '9999999999999999' then\n"
        "    local sep = string.find(m, '\\31', 17, true)\n"
        "    local id = string.sub(m, 17, sep - 1)\n"
        "    if not seen[id] then seen[id] = true\n"
    ),
    "decode": "    local ok, body = pcall(cjson.decode, string.sub(m, sep + 1))\n",
    "predicate": "    if body['f']['f2'] == 3 then kept = kept + 1 end\n",
}


def lua_script(steps: list[str]) -> str:
    """ZRANGE ``ARGV[1]`` newest members of ``KEYS[1]``, then the given per-member steps."""
    body = "".join(LUA_STEPS[step] for step in steps)
    walk_end = "    end\n  end\n" if "walk" in steps else ""
    return (
        "local seen, kept = {}, 0\n"
        "local members = redis.call('ZRANGE', KEYS[1], '+inf', '-inf', 'BYSCORE', 'REV', "
        "'LIMIT', 0, tonumber(ARGV[1]))\n"
        f"for i = 1, #members do\n  local m = members[i]\n{body}{walk_end}end\n"
        "return #members"
    )


def lua_costs(
    raw: Any, client: Any, users: list[int], n: int, members: int, rng: random.Random
) -> dict[str, Any]:
    """Redis µs per call of each cumulative step over ``members`` members, and per member."""
    names = list(LUA_STEPS)
    calls: dict[str, Callable[[int], Any]] = {}
    for count in range(1, len(names) + 1):
        script = raw.register_script(lua_script(names[:count]))
        calls[names[count - 1]] = lambda u, script=script: script(
            keys=[client.store.key(c.SIGNAL, str(u))], args=[members]
        )
    # The real script, with a filter no event matches: it scans and decodes every member.
    calls["recent_lua_no_match"] = lambda u: client.records(
        u, c.SIGNAL, within=WINDOW, limit=50, where=f"{FILTER_FIELD} == 99"
    )
    per_call = redis_pass(raw, calls, users, n, rng)
    steps: dict[str, Any] = {}
    previous = 0.0
    for name in names:
        total = per_call[name] or 0.0
        steps[name] = {
            "us_per_call": total,
            "added_us_per_member": round((total - previous) / members, 2),
        }
        previous = total
    return {
        "members": members,
        "cumulative_steps": steps,
        "recent_lua_no_match_us_per_call": per_call["recent_lua_no_match"],
        "recent_lua_no_match_members_scanned": "all events of the user (--events-per-user)",
    }


def measure(
    args: argparse.Namespace, url: str, raw: Any, tmp: Path, project: str
) -> dict[str, Any]:
    from usp_feast.query import SignalClient

    client = SignalClient.from_repo(c.write_repo(tmp, project, c.ours_store_config(url)))
    retention = client.spec(c.SIGNAL).retention
    if retention is not None and retention < WINDOW:
        raise SystemExit(f"the bench signal's retention {retention} does not cover {WINDOW}")
    rng = random.Random(args.seed)
    users = list(range(1, args.users + 1))

    c.log(f"loading {args.users} users x {args.events_per_user} events, last 24 h")
    append_ns = load_history(client.store, args, retention, rng)
    loaded = args.users * args.events_per_user
    c.log(f"loaded {loaded} events: {loaded / (append_ns / 1e9):,.0f} events/s in append()")
    checks = check(client, args, rng.sample(users, min(50, len(users))))

    calls = variants(client, args.limit)
    names = list(calls)
    for _ in range(args.warmup):
        user = rng.choice(users)
        for call in calls.values():
            call(user)
    samples: dict[str, list[int]] = {name: [] for name in names}
    c.log(f"measuring {args.rounds} rounds of {len(names)} variants, shuffled per round")
    gc.collect()
    load_before = round(os.getloadavg()[0], 2)
    window = c.CpuWindow(raw)
    for index in range(args.rounds):
        user = rng.choice(users)
        rng.shuffle(names)
        for name in names:
            started = time.perf_counter_ns()
            calls[name](user)
            samples[name].append(time.perf_counter_ns() - started)
        if (index + 1) % max(1, args.rounds // 5) == 0:
            c.log(f"  {index + 1}/{args.rounds}")
    cpu = window.stop()
    c.log(f"redis pass: {args.redis_pass} calls per variant, one variant at a time")
    redis_us = redis_pass(raw, calls, users, args.redis_pass, rng)
    lua = lua_costs(raw, client, users, args.redis_pass, 512, rng)

    results = {name: c.percentiles(samples[name]) for name in calls}
    base = results[BASELINE]
    return {
        "load": {
            "events": loaded,
            "append_events_per_s": round(loaded / (append_ns / 1e9)),
        },
        "checks": checks,
        "results": results,
        "ratios_to_unfiltered_recent": {
            name: {
                stat: c.ratio(results[name][f"{stat}_us"], base[f"{stat}_us"])
                for stat in ("p50", "p90", "p99", "mean")
            }
            for name in calls
            if name != BASELINE
        },
        # Server time per script call, measured after the main loop, one variant at a time (the
        # Redis is shared: other clients' EVALSHA calls would count too).
        "redis_server_us_per_call": redis_us,
        "redis_lua_cost_split": lua,
        "loadavg_1m_measurement_start": load_before,
        "cpu_during_measurement": cpu,
        "loadavg_1m_after": c.load_after(),
    }


if __name__ == "__main__":
    main()
