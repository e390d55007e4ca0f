"""Bounded sustained-load test of ``usp serve``: zero errors, p99 at a fixed rate, flat memory.

Issue 9, item 6: "a bounded load test of the HTTP API (fixed duration and request count,
loopback only) at a sustained rate: zero errors, p99 reported, memory flat", and the API's p99
under that load.

One feature repository (our online store, the ten-field ``bench`` signal plus a benchmark-only
segment ``bench_active``) is loaded through ``VersionedStore.append`` and served on loopback by
two ``usp serve --workers 1`` processes that differ only in access control:

* ``open`` (the baseline): no ``USP_API_KEYS``, no ``USP_API_RATE_LIMIT`` (the local default);
* ``keys``: one API key with scope ``users.read`` and a rate limit of ``--rate-limit-factor``
  x the target rate, far above what is sent, so nothing is refused; every request carries
  ``Authorization: Bearer <key>``. Same data, same request sequence: the difference is what
  key checking + the per-client token bucket cost (server CPU per request, p50, p99).

The load is **open loop**: request ``i`` is due at ``start + i / rate`` whether or not earlier
ones have been answered (a constant arrival rate, unlike wrk's closed loop, which waits for
each answer and so cannot hold a rate), for ``--duration`` seconds and at most
``--max-requests`` requests. Latency runs from the request's *due* time to the last byte of its
answer, so time spent waiting for a free connection (queueing) counts, and a stalled server
cannot hide its backlog (no coordinated omission). The generator is this process: asyncio,
``--connections`` keep-alive HTTP/1.1 connections over raw streams, requests pre-built, the
schedule kept by a thread (asyncio's timers round up to whole milliseconds). It is
shown not to be the bottleneck by its own CPU use, by how late it dispatched requests
(``generator.dispatch_late_us``: due time to hand-off, including any event-loop stall) and by
the achieved send rate vs the target.

The mix (random user per request, fixed seed, the same sequence for both servers):

* 50 % ``GET /v1/users/{u}/signals/bench?limit=50`` (last 50 events, versions collapsed);
* 15 % ``GET /v1/users/{u}/signals/bench?limit=10&within=7d&fields=f0,f4,f7`` (a projection);
* 20 % ``GET /v1/users/{u}/aggregates?signals=bench&agg=count&agg=avg:f4&agg=top_k:f7:3
  &within=7d`` (query-time features: the computation ``query_features`` serves to Feast);
* 15 % ``GET /v1/users/{u}/segments/bench_active`` (membership; half the users are members).

The server's RSS (``VmRSS`` of ``/proc/<pid>/status``, summed over its process tree) is sampled
every second of the measured windows, after an unmeasured warm-up at the same rate. Memory is
called flat when the median of the last quarter of the samples exceeds the median of the first
quarter by at most ``--flat-tolerance-pct`` (the least-squares slope is reported too).

Every answer must be a 2xx: the script prints its JSON and then **exits 1** if any request of
the warm-ups or measured windows got another status, a socket error or no answer before the
drain timeout (so ``run_all.sh`` flags it). Latency is never asserted on.

Run: ``.venv/bin/python benchmarks/bench_api_load.py [--quick] [--rate 300 --duration 60]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common as c

VENV_BIN = c.MAIN / ".venv" / "bin"
SEGMENT = "bench_active"
# (kind, share of requests, path after /v1/users/{u}).
MIX: tuple[tuple[str, float, str], ...] = (
    ("signals_recent", 0.50, "/signals/bench?limit=50"),
    ("signals_fields", 0.15, "/signals/bench?limit=10&within=7d&fields=f0,f4,f7"),
    ("aggregates", 0.20, "/aggregates?signals=bench&agg=count&agg=avg:f4&agg=top_k:f7:3&within=7d"),
    ("segment", 0.15, f"/segments/{SEGMENT}"),
)
DRAIN_TIMEOUT_S = 10.0  # after the last due time; requests still unanswered count as errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 3 s windows")
    parser.add_argument("--users", type=int, default=10_000, help="users loaded")
    parser.add_argument("--per-user", type=int, default=100, help="events stored per user")
    # About a quarter of what one worker serves on a core (~850 us of server CPU per request
    # of this mix): sustained, with headroom for the neighbours of a shared 2-core VM.
    parser.add_argument("--rate", type=float, default=300.0, help="target requests/s")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds per round")
    parser.add_argument(
        "--max-requests", type=int, default=100_000, help="cap on requests per measured window"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds per server, order alternated")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--rate-limit-factor",
        type=float,
        default=20.0,
        help="USP_API_RATE_LIMIT of the keys server, as a multiple of --rate",
    )
    parser.add_argument(
        "--flat-tolerance-pct",
        type=float,
        default=2.0,
        help="flat memory: last vs first quarter's median RSS grows by at most this %%",
    )
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    if args.quick:
        args.users, args.per_user, args.rate = 500, 60, 200.0
        args.duration, args.warmup, args.rounds = 3.0, 1.0, 1
    url = c.redis_url(args.redis)

    import redis

    client = redis.Redis.from_url(url)
    requests_per_window = min(args.max_requests, round(args.rate * args.duration))
    result: dict[str, Any] = {
        "benchmark": "http_api_sustained_load",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "users": args.users,
            "events_per_user": args.per_user,
            "target_rate_per_s": args.rate,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "requests_per_window": requests_per_window,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "mix": {kind: share for kind, share, _ in MIX},
            "rate_limit_of_keys_server_per_s": args.rate * args.rate_limit_factor,
            "flat_tolerance_pct": args.flat_tolerance_pct,
            "load_generator": "open loop, Python asyncio, raw HTTP/1.1 keep-alive (this process)",
        },
    }
    project = c.unique_project("apiload")
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            result.update(run(args, url, client, Path(tmp), project, servers))
        finally:
            for server in servers:
                c.stop_server(server)
            removed = c.drop_ours(url, project)
            c.log(f"cleanup: {removed} keys")
            result["cleanup"] = {
                "keys_removed": removed,
                "keys_left": c.count_keys(client, f"usp:{project}:*".encode()),
            }
    c.emit(result)
    errors = result.get("errors", {})
    if errors.get("total", 1):
        c.log(f"FAILED: {errors.get('total')} requests did not get a 2xx answer")
        sys.exit(1)


def run(
    args: argparse.Namespace,
    url: str,
    raw: Any,
    tmp: Path,
    project: str,
    servers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    from usp_feast.store import VersionedStore, connect

    repo = c.write_repo(tmp, project, c.ours_store_config(url))
    write_segment(repo)
    c.log("feast apply (importing feast takes ~10 s)")
    c.apply_repo(repo)
    store = VersionedStore(connect(url), project=project)
    c.log(f"loading {args.users * args.per_user} events")
    rng = random.Random(args.seed)
    load = c.load_events(
        store,
        users=args.users,
        per_user=args.per_user,
        batch_rows=20_000,
        retention=timedelta(days=30),
        rng=rng,
    )
    members = load_memberships(store, args.users)

    secret = secrets.token_urlsafe(24)  # never printed; only this run's servers know it
    rate_limit = f"{args.rate * args.rate_limit_factor:g}/s"
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("USP_API_KEYS", "USP_API_RATE_LIMIT")
    }
    configs: dict[str, dict[str, Any]] = {
        "open": {"env": base_env, "headers": b""},
        "keys": {
            "env": {
                **base_env,
                "USP_API_KEYS": f"bench={secret}:users.read",
                "USP_API_RATE_LIMIT": rate_limit,
            },
            "headers": f"Authorization: Bearer {secret}\r\n".encode(),
        },
    }
    logs = tmp / "logs"
    logs.mkdir()
    for name, config in configs.items():
        port = c.free_port()
        cmd = [str(VENV_BIN / "usp"), "serve", "--repo", str(repo), "--port", str(port)]
        cmd += ["--workers", "1"]
        c.log(f"starting usp serve ({name})")
        server = c.start_server(cmd, repo, logs / f"{name}.log", env=config["env"])
        servers.append(server)
        c.wait_ready(port, "/healthz", server, logs / f"{name}.log")
        config.update(port=port, process=server, cmd=cmd)

    checks = check_responses(configs, secret)
    c.log(f"responses: {checks}")

    window_n = min(args.max_requests, round(args.rate * args.duration))
    warmup_n = round(args.rate * args.warmup)
    # The measured sequence is the same for both servers (one seed), the warm-ups differ.
    measured_plan = plan(window_n, args.users, random.Random(args.seed + 1))
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    rss: dict[str, list[tuple[float, int]]] = {name: [] for name in configs}
    samples: dict[str, list[Any]] = {name: [] for name in configs}
    warmup_errors: dict[str, dict[str, int]] = {}
    for round_ in range(args.rounds):
        order = ["open", "keys"] if round_ % 2 == 0 else ["keys", "open"]
        for name in order:
            config = configs[name]
            warm_plan = plan(warmup_n, args.users, random.Random(args.seed + 100 + round_))
            warm = asyncio.run(
                drive(config, warm_plan, args.rate, args.connections, sample_rss=False)
            )
            for status, count in warm["errors"].items():
                bucket = warmup_errors.setdefault(name, {})
                bucket[status] = bucket.get(status, 0) + count
            measured = measure(config, measured_plan, args, raw)
            rss[name].extend(measured.pop("rss_samples"))
            samples[name].append(measured.pop("latency_samples_ns"))
            rounds[name].append(measured)
            lat = measured["latency_us"]
            c.log(
                f"round {round_ + 1} {name}: sent {measured['achieved_send_rate_per_s']}/s "
                f"(target {args.rate:g}), p50 {lat['p50_us']} us, p99 {lat['p99_us']} us, "
                f"errors {measured['errors']}, server CPU {measured['cpu_pct']['server']}%, "
                f"generator CPU {measured['cpu_pct']['generator']}%"
            )

    summary = {name: summarize(rounds[name], samples[name], rss[name], args) for name in configs}
    for name, found in warmup_errors.items():
        summary[name]["warmup_errors"] = found
    total_errors = sum(sum(r["errors"].values()) for runs in rounds.values() for r in runs) + sum(
        sum(found.values()) for found in warmup_errors.values()
    )
    open_p99 = summary["open"]["latency_us"]["p99_us"]
    keys_p99 = summary["keys"]["latency_us"]["p99_us"]
    # None: too few RSS samples for a verdict (--quick); only a measured climb fails.
    flat = all(summary[name]["memory"]["flat"] is not False for name in configs)
    return {
        "load": {
            "events": load["events"],
            "append_events_per_s": round(load["events"] / (load["append_ns"] / 1e9)),
            "segment_members": members,
        },
        "servers": {
            name: {
                "cmd": " ".join([Path(config["cmd"][0]).name, *config["cmd"][1:]]),
                "env": f"USP_API_KEYS=bench=<secret>:users.read USP_API_RATE_LIMIT={rate_limit}"
                if name == "keys"
                else "no USP_API_KEYS, no USP_API_RATE_LIMIT",
            }
            for name, config in configs.items()
        },
        "response_check": checks,
        "results": summary,
        "rounds": rounds,
        "errors": {
            "total": total_errors,
            "measured": {name: summary[name]["errors"] for name in configs},
            "warmup": warmup_errors,
        },
        "ratios": {
            "p50_keys_over_open": c.ratio(
                summary["keys"]["latency_us"]["p50_us"], summary["open"]["latency_us"]["p50_us"]
            ),
            "p99_keys_over_open": c.ratio(keys_p99, open_p99),
            "server_cpu_us_per_request_keys_over_open": c.ratio(
                summary["keys"]["server_cpu_us_per_request"],
                summary["open"]["server_cpu_us_per_request"],
            ),
        },
        "loadavg_1m_after": c.load_after(),
        "goal": {
            "metric": f"{args.rate:g} req/s open loop, mixed API: zero non-2xx, memory flat "
            "(p99 us reported: open / keys)",
            "target": "0 errors, RSS last-quarter vs first-quarter growth "
            f"<= {args.flat_tolerance_pct:g} %",
            "measured": f"errors {total_errors}, p99 {open_p99} / {keys_p99} us, "
            "RSS growth " + " / ".join(f"{summary[n]['memory']['growth_pct']} %" for n in configs),
            "met": total_errors == 0 and flat,
        },
    }


def write_segment(repo: Path) -> None:
    """Add the benchmark-only segment (the membership endpoint reads its view)."""
    (repo / "segments").mkdir(exist_ok=True)
    (repo / "segments" / f"{SEGMENT}.yaml").write_text(
        f"name: {SEGMENT}\n"
        "description: Benchmark-only segment; a bench event puts a user in.\n"
        "owner: benchmarks\n"
        "trigger:\n  signal: bench\n"
        "expires_after: 14d\n"
        "retention: 30d\n"
    )


def load_memberships(store: Any, users: int) -> int:
    """Store an ``entered`` change for every odd user, as the segment job would."""
    from usp_feast.segments import MembershipChange
    from usp_feast.store import now_micros
    from usp_feast.versions import Record

    now_us = now_micros()
    view = f"segment_{SEGMENT}"
    rows = []
    for user in range(1, users + 1, 2):
        at_ms = now_us // 1000 - 3_600_000
        change = MembershipChange(
            change="entered",
            cause=f"m-{user}",
            at_ms=at_ms,
            in_segment=True,
            entered_at_ms=at_ms,
            expires_at_ms=at_ms + 14 * 86_400_000,
            reason="bench event",
        )
        fields = change.to_row(SEGMENT, str(user))
        rows.append((str(user), Record(change.cause, at_ms * 1000, now_us, fields)))
    for start in range(0, len(rows), 20_000):
        store.append(view, rows[start : start + 20_000], retention=timedelta(days=30), now=now_us)
    return len(rows)


def plan(n: int, users: int, rng: random.Random) -> list[tuple[int, str]]:
    """``n`` (mix index, path) pairs: the request sequence of one window."""
    kinds = list(range(len(MIX)))
    weights = [share for _, share, _ in MIX]
    chosen = rng.choices(kinds, weights=weights, k=n)
    return [(k, f"/v1/users/{rng.randint(1, users)}{MIX[k][2]}") for k in chosen]


@dataclass
class Window:
    """What one open-loop run recorded, indexed by request number."""

    n: int
    due_ns: list[int] = field(default_factory=list)
    handed_ns: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    done_ns: list[int] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    body_bytes: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.due_ns = [0] * self.n
        self.handed_ns = [0] * self.n
        self.sent_ns = [0] * self.n
        self.done_ns = [0] * self.n
        self.status = [0] * self.n  # 0: no answer


async def drive(
    config: dict[str, Any],
    requests: list[tuple[int, str]],
    rate: float,
    connections: int,
    *,
    sample_rss: bool,
    server_pids: list[int] | None = None,
) -> dict[str, Any]:
    """Send ``requests`` open loop at ``rate``/s over ``connections``; return what happened."""
    n = len(requests)
    window = Window(n)
    host = f"Host: 127.0.0.1:{config['port']}\r\n".encode() + config["headers"]
    wire = [b"GET " + path.encode() + b" HTTP/1.1\r\n" + host + b"\r\n" for _, path in requests]
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    port = config["port"]

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    async def worker() -> None:
        reader, writer = await connect()
        try:
            while True:
                index = await queue.get()
                if index is None:
                    queue.task_done()
                    return
                window.sent_ns[index] = time.perf_counter_ns()
                try:
                    writer.write(wire[index])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    lower = head.lower()
                    at = lower.find(b"\r\ncontent-length:")
                    if at < 0:
                        raise ValueError("answer without Content-Length")
                    length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
                    await reader.readexactly(length)
                    window.done_ns[index] = time.perf_counter_ns()
                    window.status[index] = status
                    window.body_bytes += length
                    if b"\r\nconnection: close" in lower:
                        writer.close()
                        reader, writer = await connect()
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ValueError,
                ) as exc:
                    kind = type(exc).__name__
                    window.socket_errors[kind] = window.socket_errors.get(kind, 0) + 1
                    writer.close()
                    reader, writer = await connect()
                queue.task_done()
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the first due time
    rss: list[tuple[float, int]] = []
    sampler = asyncio.create_task(sample(server_pids or [], rss)) if sample_rss else None
    interval_ns = 1e9 / rate
    start = time.perf_counter_ns() + 10_000_000
    loop = asyncio.get_running_loop()

    def hand(index: int) -> None:
        window.handed_ns[index] = time.perf_counter_ns()
        queue.put_nowait(index)

    def pace() -> None:
        # A thread keeps the schedule: time.sleep wakes within ~0.1 ms, while the event
        # loop's own timers round up to whole milliseconds (epoll), which made requests
        # ~0.6 ms late on average. Handing over wakes the loop at once.
        for index in range(n):
            due = start + int(index * interval_ns)
            window.due_ns[index] = due
            delay = due - time.perf_counter_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            loop.call_soon_threadsafe(hand, index)

    await asyncio.to_thread(pace)
    last_due = start + int((n - 1) * interval_ns)
    try:
        await asyncio.wait_for(queue.join(), timeout=DRAIN_TIMEOUT_S)
    except TimeoutError:
        c.log(f"drain timeout: {sum(1 for s in window.status if s == 0)} requests unanswered")
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.sleep(0)
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    if sampler is not None:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    return summarize_window(window, requests, start, last_due, rss)


async def sample(pids: list[int], out: list[tuple[float, int]]) -> None:
    """Append (monotonic seconds, RSS bytes of ``pids``) once a second until cancelled."""
    while True:
        out.append((time.monotonic(), rss_bytes(pids)))
        await asyncio.sleep(1.0)


def rss_bytes(pids: list[int]) -> int:
    """Sum of ``VmRSS`` over ``pids`` (from ``/proc/<pid>/status``; exited ones count 0)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def summarize_window(
    window: Window,
    requests: list[tuple[int, str]],
    start: int,
    last_due: int,
    rss: list[tuple[float, int]],
) -> dict[str, Any]:
    """Rates, errors, latency (overall and per kind) of one run."""
    answered = [i for i in range(window.n) if window.status[i]]
    errors: dict[str, int] = {}
    for i in answered:
        if not 200 <= window.status[i] < 300:
            key = str(window.status[i])
            errors[key] = errors.get(key, 0) + 1
    errors.update(window.socket_errors)
    unanswered = window.n - len(answered) - sum(window.socket_errors.values())
    if unanswered:
        errors["no_answer"] = unanswered
    latency = [window.done_ns[i] - window.due_ns[i] for i in answered]
    service = [window.done_ns[i] - window.sent_ns[i] for i in answered]
    late = [window.handed_ns[i] - window.due_ns[i] for i in range(window.n)]
    waited = [window.sent_ns[i] - window.handed_ns[i] for i in answered]
    by_kind = {
        kind: c.percentiles(
            [window.done_ns[i] - window.due_ns[i] for i in answered if requests[i][0] == k]
        )
        for k, (kind, _, _) in enumerate(MIX)
    }
    handed_span = (window.handed_ns[-1] - window.handed_ns[0]) / 1e9 if window.n > 1 else 0.0
    done_last = max((window.done_ns[i] for i in answered), default=start)
    return {
        "requests": window.n,
        "answered": len(answered),
        "errors": errors,
        "target_rate_per_s": round(1e9 / ((last_due - start) / max(window.n - 1, 1)), 1)
        if window.n > 1
        else None,
        "achieved_send_rate_per_s": round((window.n - 1) / handed_span, 1) if handed_span else None,
        "throughput_per_s": round(len(answered) / ((done_last - start) / 1e9), 1)
        if done_last > start
        else None,
        "latency_us": c.percentiles(latency),
        "latency_us_by_kind": by_kind,
        "service_us": c.percentiles(service),
        "connection_wait_us": c.percentiles(waited),
        "dispatch_late_us": c.percentiles(late),
        "response_bytes_mean": round(window.body_bytes / max(len(answered), 1)),
        "rss_samples": rss,
        "latency_samples_ns": (
            latency,
            {
                kind: [lat for lat, i in zip(latency, answered, strict=True) if requests[i][0] == k]
                for k, (kind, _, _) in enumerate(MIX)
            },
        ),
    }


def measure(
    config: dict[str, Any], requests: list[tuple[int, str]], args: argparse.Namespace, raw: Any
) -> dict[str, Any]:
    """One measured window, with the CPU each party used meanwhile and the server's RSS."""
    import psutil

    tree = [psutil.Process(config["process"].pid)]
    tree += tree[0].children(recursive=True)
    pids = [p.pid for p in tree]
    server_before = sum(c.process_cpu_seconds(p) for p in tree)
    cpu = c.CpuWindow(raw)
    started = time.perf_counter()
    stats = asyncio.run(
        drive(config, requests, args.rate, args.connections, sample_rss=True, server_pids=pids)
    )
    wall = time.perf_counter() - started
    server_cpu = sum(c.process_cpu_seconds(p) for p in tree) - server_before
    window = cpu.stop()
    server_pct = round(100 * server_cpu / wall, 1)
    stats["cpu_pct"] = {
        "server": server_pct,
        "redis": window["redis_pct"],
        # This process: the load generator and the RSS sampler.
        "generator": window["this_process_pct"],
        # Everything else on this shared machine (other engineers' jobs).
        "other": round(window["other_pct"] - server_pct, 1),
        "steal": window["steal_pct"],
        "machine_capacity": 100 * (os.cpu_count() or 1),
    }
    stats["server_cpu_us_per_request"] = round(1e6 * server_cpu / max(stats["answered"], 1), 1)
    stats["generator"] = {
        "cpu_pct": window["this_process_pct"],
        "dispatch_late_us": stats.pop("dispatch_late_us"),
    }
    return stats


def summarize(
    rounds: list[dict[str, Any]],
    samples: list[tuple[list[int], dict[str, list[int]]]],
    rss: list[tuple[float, int]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One server over all its rounds: latency pooled over every measured request, counts
    summed, rates and CPU as the median round, memory over all its RSS samples."""

    def median(pick: Any) -> float:
        return round(float(statistics.median(pick(r) for r in rounds)), 1)

    errors: dict[str, int] = {}
    for r in rounds:
        for key, count in r["errors"].items():
            errors[key] = errors.get(key, 0) + count
    return {
        "requests": sum(r["requests"] for r in rounds),
        "answered": sum(r["answered"] for r in rounds),
        "errors": errors,
        "achieved_send_rate_per_s": median(lambda r: r["achieved_send_rate_per_s"] or 0.0),
        "throughput_per_s": median(lambda r: r["throughput_per_s"] or 0.0),
        "latency_us": c.percentiles([ns for overall, _ in samples for ns in overall]),
        "latency_us_by_kind": {
            kind: c.percentiles([ns for _, by_kind in samples for ns in by_kind[kind]])
            for kind, _, _ in MIX
        },
        "cpu_pct": {
            key: median(lambda r, k=key: r["cpu_pct"][k])
            for key in ("server", "redis", "generator", "other", "steal")
        },
        "server_cpu_us_per_request": median(lambda r: r["server_cpu_us_per_request"]),
        "generator_dispatch_late_p99_us": median(
            lambda r: r["generator"]["dispatch_late_us"]["p99_us"]
        ),
        "memory": memory_verdict(rss, args.flat_tolerance_pct),
    }


def memory_verdict(samples: list[tuple[float, int]], tolerance_pct: float) -> dict[str, Any]:
    """RSS over the measured windows: first vs last quarter, slope, and whether it is flat."""
    if len(samples) < 4:  # --quick: too short a window to judge
        return {"samples": len(samples), "growth_pct": None, "flat": None}
    samples = sorted(samples)
    values = [v / 2**20 for _, v in samples]
    quarter = max(1, len(values) // 4)
    first, last = statistics.median(values[:quarter]), statistics.median(values[-quarter:])
    growth_pct = 100 * (last - first) / first
    # Least-squares slope against the sample's own time (MiB per minute of measured load;
    # the gaps between rounds, when the other server is measured, have no samples).
    t0 = samples[0][0]
    xs = [t - t0 for t, _ in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(values)
    var_x = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)) / var_x
    return {
        "samples": len(values),
        "rss_mib_first": round(values[0], 1),
        "rss_mib_last": round(values[-1], 1),
        "rss_mib_min": round(min(values), 1),
        "rss_mib_max": round(max(values), 1),
        "first_quarter_median_mib": round(first, 1),
        "last_quarter_median_mib": round(last, 1),
        "growth_mib": round(last - first, 2),
        "growth_pct": round(growth_pct, 2),
        "slope_mib_per_min": round(60 * slope, 3),
        "flat": growth_pct <= tolerance_pct,
        # The shape, for a reader to see a plateau or a climb: one sample in ten.
        "rss_mib_every_10th_sample": [round(v, 1) for v in values[::10]],
    }


def check_responses(configs: dict[str, dict[str, Any]], secret: str) -> dict[str, Any]:
    """Each kind answers 200 with real data; the keys server refuses a request without its key."""
    found: dict[str, Any] = {}
    for name, config in configs.items():
        headers = {"Authorization": f"Bearer {secret}"} if name == "keys" else {}
        bodies = {}
        for kind, _, path in MIX:
            request = urllib.request.Request(
                f"http://127.0.0.1:{config['port']}/v1/users/1{path}", headers=headers
            )
            with urllib.request.urlopen(request, timeout=30) as reply:
                bodies[kind] = json.loads(reply.read())
        found[name] = {
            "signals_recent_events": bodies["signals_recent"]["count"],
            "signals_fields_events": bodies["signals_fields"]["count"],
            "signals_fields_keys": sorted(next(iter(bodies["signals_fields"]["events"]), {})),
            "aggregates": bodies["aggregates"]["aggregates"],
            "user_1_in_segment": bodies["segment"]["in_segment"],
        }
    try:
        urllib.request.urlopen(
            f"http://127.0.0.1:{configs['keys']['port']}/v1/users/1{MIX[0][2]}", timeout=30
        )
        found["keys_without_key_status"] = 200
    except urllib.error.HTTPError as exc:
        found["keys_without_key_status"] = exc.code
    return found


if __name__ == "__main__":
    main()
