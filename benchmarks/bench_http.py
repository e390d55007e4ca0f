"""HTTP requests/s: ``usp serve`` (``GET .../signals/bench?limit=50``) vs ``feast serve``.

One feature repository (our online store), loaded through ``VersionedStore.append``, served
twice on loopback, each with one worker:

* ours: ``usp serve --repo R --port P --workers 1``, endpoint
  ``GET /v1/users/{id}/signals/bench?limit=50`` (the last 50 events, versions collapsed);
* Feast's feature server: ``feast serve -p P --workers 1 --no-access-log --max-requests 0``
  run in R, endpoint ``POST /get-online-features`` for ``bench:f0..f9`` of one user (the newest
  event). ``--no-access-log`` matches ours (which logs no access lines) and
  ``--max-requests 0`` stops gunicorn from recycling the worker every ~1000 requests: the
  baseline gets its best configuration.

The load generator is ``wrk`` (install with ``benchmarks/setup.sh``) with ``http_load.lua``:
a fixed number of keep-alive connections, a random user per request, a fixed duration and a
cap on the request count. The CPU used by each server's process tree, by Redis and by wrk
during the measured window is reported, to show which side is the bottleneck.

Run: ``.venv/bin/python benchmarks/bench_http.py [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import _common as c

GOAL_RATIO = 1.5  # ours / feast serve, requests per second
HERE = Path(__file__).resolve().parent
VENV_BIN = c.MAIN / ".venv" / "bin"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 3 s runs")
    parser.add_argument("--users", type=int, default=10_000, help="users loaded")
    parser.add_argument("--per-user", type=int, default=100, help="events stored per user")
    parser.add_argument("--duration", type=int, default=10, help="measured seconds per server")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds per server")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="cap on requests per wrk run"
    )
    parser.add_argument("--limit", type=int, default=50, help="events per usp request")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.users, args.per_user, args.duration, args.warmup, args.rounds = 500, 60, 3, 1, 1
    url = c.redis_url(args.redis)
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed; run benchmarks/setup.sh first")

    import redis

    client = redis.Redis.from_url(url)
    result: dict[str, Any] = {
        "benchmark": "http_recent_throughput",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "users": args.users,
            "events_per_user": args.per_user,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "wrk_threads": 1,
            "rounds": args.rounds,
            "max_requests_per_run": args.max_requests,
            "limit": args.limit,
            "load_generator": subprocess.run(
                [wrk, "--version"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[0],
        },
    }
    project = c.unique_project("http")
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            result.update(run(args, url, client, wrk, Path(tmp), project, servers))
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


def run(
    args: argparse.Namespace,
    url: str,
    raw: Any,
    wrk: str,
    tmp: Path,
    project: str,
    servers: list[subprocess.Popen[bytes]],
) -> dict[str, Any]:
    from usp_feast.store import VersionedStore, connect

    repo = c.write_repo(tmp, project, c.ours_store_config(url))
    c.log("feast apply (importing feast takes ~10 s)")
    c.apply_repo(repo)
    store = VersionedStore(connect(url), project=project)
    c.log(f"loading {args.users * args.per_user} events")
    load = c.load_events(
        store,
        users=args.users,
        per_user=args.per_user,
        batch_rows=20_000,
        retention=timedelta(days=30),
        rng=random.Random(args.seed),
    )

    usp_port, feast_port = c.free_port(), c.free_port()
    logs = tmp / "logs"
    logs.mkdir()
    c.log("starting usp serve and feast serve")
    usp_cmd = [
        str(VENV_BIN / "usp"),
        "serve",
        "--repo",
        str(repo),
        "--port",
        str(usp_port),
        "--workers",
        "1",
    ]
    feast_cmd = [
        str(VENV_BIN / "feast"),
        "serve",
        "-p",
        str(feast_port),
        "--workers",
        "1",
        "--no-access-log",
        "--max-requests",
        "0",
    ]
    targets: dict[str, dict[str, Any]] = {
        "usp": {"cmd": usp_cmd, "port": usp_port, "health": "/healthz"},
        "feast": {"cmd": feast_cmd, "port": feast_port, "health": "/health"},
    }
    for name, target in targets.items():
        server = c.start_server(target["cmd"], repo, logs / f"{name}.log")
        servers.append(server)
        target["process"] = server
        c.wait_ready(target["port"], target["health"], server, logs / f"{name}.log")

    checks = check_responses(args, usp_port, feast_port)
    c.log(f"responses: {checks}")

    rounds: dict[str, list[dict[str, Any]]] = {"usp": [], "feast": []}
    for round_ in range(args.rounds):
        order = ["usp", "feast"] if round_ % 2 == 0 else ["feast", "usp"]
        for name in order:
            target = targets[name]
            lua_args = [name, str(args.users), str(args.max_requests), str(args.limit)]
            # Warm-up: its numbers are thrown away.
            run_wrk(wrk, target["port"], args.connections, args.warmup, lua_args)
            measured = measure(wrk, target, args, lua_args, raw)
            rounds[name].append(measured)
            latency, cpu = measured["latency_us"], measured["cpu_pct"]
            c.log(
                f"round {round_ + 1} {name}: {measured['rps']:,.0f} req/s, "
                f"p50 {latency['p50']} us, p99 {latency['p99']} us, "
                f"server CPU {cpu['server']}%, wrk CPU {cpu['wrk']}%"
            )

    summary = {name: summarize(rounds[name]) for name in rounds}
    rps_ratio = c.ratio(summary["usp"]["rps"], summary["feast"]["rps"])
    return {
        "load": {
            "events": load["events"],
            "append_events_per_s": round(load["events"] / (load["append_ns"] / 1e9)),
        },
        "servers": {
            name: " ".join([Path(t["cmd"][0]).name, *t["cmd"][1:]]) for name, t in targets.items()
        },
        "response_check": checks,
        "results": summary,
        "rounds": rounds,
        "ratios": {
            "rps_usp_over_feast": rps_ratio,
            "p50_usp_over_feast": c.ratio(
                summary["usp"]["latency_us"]["p50"], summary["feast"]["latency_us"]["p50"]
            ),
            "p99_usp_over_feast": c.ratio(
                summary["usp"]["latency_us"]["p99"], summary["feast"]["latency_us"]["p99"]
            ),
            # Server CPU per request, feast / usp: the throughput ratio a server-bound run on
            # an otherwise idle machine would approach.
            "cpu_efficiency_usp_over_feast": c.ratio(
                summary["feast"]["server_cpu_us_per_request"],
                summary["usp"]["server_cpu_us_per_request"],
            ),
        },
        "loadavg_1m_after": c.load_after(),
        "goal": {
            "metric": "HTTP requests/s, usp serve / feast serve (1 worker each)",
            "target": f">= {GOAL_RATIO}",
            "measured": rps_ratio,
            "met": rps_ratio is not None and rps_ratio >= GOAL_RATIO,
        },
    }


def measure(
    wrk: str, target: dict[str, Any], args: argparse.Namespace, lua_args: list[str], raw: Any
) -> dict[str, Any]:
    """One measured wrk run, with the CPU each party used meanwhile."""
    import psutil

    tree = [psutil.Process(target["process"].pid)]
    tree += tree[0].children(recursive=True)
    server_before = sum(c.process_cpu_seconds(p) for p in tree)
    redis_before = c.redis_cpu_seconds(raw)
    machine_before = c.machine_busy_seconds()
    window = c.CpuWindow(raw)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    stats = run_wrk(wrk, target["port"], args.connections, args.duration, lua_args)
    wall = time.perf_counter() - started
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_cpu = c.machine_busy_seconds() - machine_before
    steal = window.stop()["steal_pct"]
    server_cpu = sum(c.process_cpu_seconds(p) for p in tree) - server_before
    redis_cpu = c.redis_cpu_seconds(raw) - redis_before
    wrk_cpu = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    stats["rps"] = round(stats["requests"] / (stats["duration_us"] / 1e6), 1)
    stats["cpu_pct"] = {
        "server": round(100 * server_cpu / wall, 1),
        "redis": round(100 * redis_cpu / wall, 1),
        "wrk": round(100 * wrk_cpu / wall, 1),
        # Everything else on this shared machine (other engineers' jobs, this script).
        "other": round(100 * (machine_cpu - server_cpu - redis_cpu - wrk_cpu) / wall, 1),
        "steal": steal,
        "machine_capacity": 100 * (os.cpu_count() or 1),
    }
    stats["server_cpu_us_per_request"] = round(1e6 * server_cpu / max(stats["requests"], 1), 1)
    return stats


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests/s over all rounds; everything else: the median round."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["duration_us"] for r in rounds) / 1e6

    def median(pick: Any) -> float:
        return float(statistics.median(pick(r) for r in rounds))

    return {
        "requests": requests,
        "rps": round(requests / seconds, 1),
        "rps_per_round": [r["rps"] for r in rounds],
        "latency_us": {
            key: median(lambda r, k=key: r["latency_us"][k]) for key in ("p50", "p90", "p99")
        },
        "non_200": sum(r["non_200"] for r in rounds),
        "socket_errors": sum(sum(r["errors"].values()) for r in rounds),
        "cpu_pct": {
            key: median(lambda r, k=key: r["cpu_pct"][k])
            for key in ("server", "redis", "wrk", "other", "steal")
        },
        "server_cpu_us_per_request": median(lambda r: r["server_cpu_us_per_request"]),
    }


def run_wrk(
    wrk: str, port: int, connections: int, seconds: int, lua_args: list[str]
) -> dict[str, Any]:
    """Run wrk once (one thread) and parse the JSON line the Lua script prints."""
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "http_load.lua"),
        f"http://127.0.0.1:{port}",
        "--",
        *lua_args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line.removeprefix("WRKJSON "))
    raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")


def check_responses(args: argparse.Namespace, usp_port: int, feast_port: int) -> dict[str, Any]:
    """Both servers answer 200 with real data; record the response sizes."""
    user = 1
    with urllib.request.urlopen(
        f"http://127.0.0.1:{usp_port}/v1/users/{user}/signals/bench?limit={args.limit}", timeout=30
    ) as reply:
        usp_body = reply.read()
    body = json.dumps({"features": c.FEATURE_REFS, "entities": {"user_id": [user]}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{feast_port}/get-online-features",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        feast_body = reply.read()
    usp_json, feast_json = json.loads(usp_body), json.loads(feast_body)
    values = [r["values"][0] for r in feast_json["results"]]
    return {
        "usp_events": usp_json["count"],
        "usp_expected_events": min(args.limit, args.per_user),
        "usp_response_bytes": len(usp_body),
        "feast_non_null_values": sum(v is not None for v in values),
        "feast_response_bytes": len(feast_body),
    }


if __name__ == "__main__":
    main()
