"""Shared helpers of the benchmark scripts (not a benchmark itself).

Every benchmark prints exactly one JSON object on stdout and its progress on stderr; the
helpers here collect machine information, compute latency percentiles, build a throw-away
feature repository with a benchmark-only signal, and clean up every key a run wrote.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

MAIN = Path(__file__).resolve().parent.parent
DEFAULT_REDIS = os.environ.get("USP_BENCH_REDIS", "redis://127.0.0.1:16379")
# The host's own Redis must never receive benchmark traffic.
FORBIDDEN_PORTS = {6379}

SIGNAL = "bench"
# Ten fields of the kinds signals really carry: ids and counts, prices, short strings.
FIELDS: dict[str, str] = {
    "f0": "int",
    "f1": "int",
    "f2": "int",
    "f3": "int",
    "f4": "float",
    "f5": "float",
    "f6": "float",
    "f7": "string",
    "f8": "string",
    "f9": "string",
}
FEATURE_REFS = [f"{SIGNAL}:{name}" for name in FIELDS]
CITIES = ["Paris", "Lisbon", "Rome", "Tokyo", "Cape Town", "Lima", "Oslo", "Austin"]
ROOMS = ["entire_home", "private_room", "shared_room", "hotel_room"]


def log(message: str) -> None:
    """Progress line on stderr (stdout carries only the result)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON result object."""
    print(json.dumps(result, indent=2, sort_keys=False, default=str))


def redis_url(url: str) -> str:
    """Validate the benchmark's Redis URL; refuse the system Redis."""
    parsed = urlparse(url if "://" in url else f"redis://{url}")
    if (parsed.port or 6379) in FORBIDDEN_PORTS:
        raise SystemExit(
            f"refusing to benchmark against {url}: port 6379 is the host's own Redis; "
            "start the local stack with `.venv/bin/usp dev up` (port 16379)"
        )
    return url


def host_port(url: str) -> str:
    """``host:port`` of a Redis URL (the form Feast's stock ``redis`` store expects)."""
    parsed = urlparse(url)
    return f"{parsed.hostname}:{parsed.port or 6379}"


def machine_info(client: Any | None = None) -> dict[str, Any]:
    """Where the numbers came from: CPU, memory, Python, Redis and package versions."""
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
                break
    except OSError:
        pass
    try:
        server_cli = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        server_cli = None
    info: dict[str, Any] = {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        # Other work on this shared machine shows up here; compare it with load_after.
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
        "nproc": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server_cli": server_cli,
        "packages": {p: _version(p) for p in ("feast", "redis", "pandas", "uvicorn", "fastapi")},
    }
    if client is not None:
        server = client.info("server")
        info["redis_server"] = server.get("redis_version")
        info["redis_port"] = server.get("tcp_port")
    return info


def load_after() -> float:
    """One-minute load average at the end of a run (contention check)."""
    return round(os.getloadavg()[0], 2)


def machine_busy_seconds() -> float:
    """CPU-seconds all cores of the machine have spent busy since boot (psutil)."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class CpuWindow:
    """CPU used during a measured window: this process, Redis, and everything else.

    The machine is shared; a large ``other_pct`` or ``steal_pct`` means the window's tail
    latencies say more about the neighbours than about the code under test.
    """

    def __init__(self, redis_client: Any) -> None:
        import psutil

        self._psutil = psutil
        self._redis = redis_client
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, float, float]:
        times = self._psutil.cpu_times()
        busy = float(sum(times) - times.idle - getattr(times, "iowait", 0.0))
        info = self._redis.info("cpu")
        return (
            time.perf_counter(),
            busy,
            float(getattr(times, "steal", 0.0)),
            time.process_time(),
            float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        )

    def stop(self) -> dict[str, float]:
        """Percentages of one core over the window (the machine has ``nproc`` x 100)."""
        end = self._snapshot()
        wall, busy, steal, own, redis_cpu = (b - a for a, b in zip(self._start, end, strict=True))
        return {
            "machine_busy_pct": round(100 * busy / wall, 1),
            "this_process_pct": round(100 * own / wall, 1),
            "redis_pct": round(100 * redis_cpu / wall, 1),
            "other_pct": round(100 * (busy - own - redis_cpu) / wall, 1),
            "steal_pct": round(100 * steal / wall, 1),
        }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def percentiles(samples_ns: Sequence[int]) -> dict[str, float]:
    """Latency summary in microseconds (nearest-rank percentiles)."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    if n == 0:
        return {"n": 0}

    def rank(p: float) -> float:
        index = min(n - 1, max(0, int(-(-p * n // 100)) - 1))
        return round(ordered[index] / 1000, 1)

    return {
        "n": n,
        "p50_us": rank(50),
        "p90_us": rank(90),
        "p99_us": rank(99),
        "p999_us": rank(99.9),
        "max_us": round(ordered[-1] / 1000, 1),
        "mean_us": round(sum(ordered) / n / 1000, 1),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded, None when undefined."""
    if not denominator:
        return None
    return round(numerator / denominator, 3)


def unique_project(kind: str) -> str:
    """A project name no other run or engineer uses (Feast projects: letters, digits, _)."""
    return f"uspbench_{kind}_{uuid.uuid4().hex[:8]}"


def ours_store_config(url: str) -> dict[str, Any]:
    """``online_store:`` of the project's versioned store."""
    return {"type": "usp_feast.online_store.VersionedRedisOnlineStore", "connection_string": url}


def stock_store_config(url: str) -> dict[str, Any]:
    """``online_store:`` of Feast's stock Redis store (default settings: dedup on)."""
    return {"type": "redis", "connection_string": host_port(url)}


def write_repo(root: Path, project: str, online_store: dict[str, Any]) -> Path:
    """Write a throw-away feature repository with the benchmark-only ten-field signal."""
    repo = root / project
    (repo / "signals").mkdir(parents=True)
    (repo / "validation").mkdir()
    (repo / "data").mkdir()
    store_lines = "\n".join(f"  {key}: {value}" for key, value in online_store.items())
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        f"online_store:\n{store_lines}\n"
        "offline_store:\n  type: usp_feast.offline_store.PartitionedParquetOfflineStore\n"
        "entity_key_serialization_version: 3\n"
    )
    field_lines = "\n".join(f"  {name}: {kind}" for name, kind in FIELDS.items())
    (repo / "signals" / f"{SIGNAL}.yaml").write_text(
        f"name: {SIGNAL}\n"
        "description: Benchmark-only signal with ten fields.\n"
        "owner: benchmarks\n"
        "source:\n  topic: events.bench\n"
        f"fields:\n{field_lines}\n"
        "transform: bench_transforms.BenchTransform\n"
        "retention: 30d\n"
        "ttl: 1d\n"
        f"validation: {SIGNAL}\n"
    )
    (repo / "bench_transforms.py").write_text(
        '"""Transform of the benchmark-only signal."""\n\n'
        "from usp_feast.transforms import SelectFields\n\n\n"
        "class BenchTransform(SelectFields):\n"
        f"    fields = {tuple(FIELDS)!r}\n"
    )
    # Any example suite will do: the benchmark never validates events.
    shutil.copy(MAIN / "validation" / "wishlist_add.json", repo / "validation" / f"{SIGNAL}.json")
    (repo / "definitions.py").write_text(
        "from pathlib import Path\n"
        "from usp_feast.compile import repo_objects\n"
        "globals().update(repo_objects(Path(__file__).parent))\n"
    )
    return repo


def apply_repo(repo: Path) -> Any:
    """``feast apply`` of a repository; returns its FeatureStore."""
    from feast import FeatureStore

    from usp_feast.compile import repo_objects

    store = FeatureStore(repo_path=str(repo))
    store.apply(list(repo_objects(repo).values()))
    return store


def field_values(rng: random.Random) -> dict[str, Any]:
    """One row's ten feature values."""
    return {
        "f0": rng.randrange(1, 10_000_000),
        "f1": rng.randrange(1, 30),
        "f2": rng.randrange(1, 17),
        "f3": rng.randrange(0, 1_000),
        "f4": round(rng.uniform(20, 900), 2),
        "f5": round(rng.uniform(0, 5), 2),
        "f6": round(rng.uniform(0, 1), 4),
        "f7": rng.choice(CITIES),
        "f8": rng.choice(ROOMS),
        "f9": f"query {rng.randrange(100_000)}",
    }


def make_frame(users: Iterable[int], event_time: datetime, tag: str, rng: random.Random) -> Any:
    """A Feast-ready DataFrame: one row per user, event ids unique per (tag, user)."""
    import pandas as pd

    rows = []
    for offset, user in enumerate(users):
        row: dict[str, Any] = {
            "user_id": user,
            "event_id": f"{tag}-{user}",
            # Distinct microseconds per row, so every row is a distinct event time.
            "event_ts": event_time + timedelta(microseconds=offset),
        }
        row.update(field_values(rng))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["user_id"] = frame["user_id"].astype("int64")
    return frame


def drop_ours(url: str, project: str) -> int:
    """Delete every key the project's versioned store wrote."""
    from usp_feast.store import VersionedStore, connect

    return VersionedStore(connect(url), project=project).drop_project()


def drop_stock(client: Any, project: str) -> int:
    """Delete every key Feast's stock Redis store wrote for ``project``.

    Stock keys are ``<serialized entity key><project>``: binary, *suffixed* by the project.
    """
    removed = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
        batch.append(key)
        if len(batch) >= 500:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return removed


def count_keys(client: Any, pattern: bytes) -> int:
    """Keys matching a SCAN pattern (cleanup check)."""
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def load_events(
    store: Any,
    *,
    users: int,
    per_user: int,
    batch_rows: int,
    retention: timedelta | None,
    rng: random.Random,
) -> dict[str, int]:
    """Append ``per_user`` events for each user through ``VersionedStore.append``.

    Events are interleaved round-robin over users (as a live stream interleaves them) and spread
    over the last 20 days, so the newest event of every user is a few hours old: inside both the
    benchmark signal's 30-day retention and its 1-day online TTL. Each pipelined batch is stamped
    with one processing-time version, as the online store plugin stamps a write.

    Returns:
        ``events`` appended, ``append_ns`` spent inside ``append()`` (record building and
        random data excluded) and ``wall_ns`` for the whole load.

    """
    from usp_feast.store import now_micros
    from usp_feast.versions import Record

    span_us = 20 * 86_400_000_000
    step_us = span_us // max(per_user, 1)
    start_us = now_micros() - span_us
    loaded = append_ns = 0
    batch: list[tuple[str, Any]] = []
    version = now_micros()
    wall_started = time.perf_counter_ns()
    report_every = max(batch_rows, users * per_user // 10)
    next_report = report_every

    def flush() -> int:
        started = time.perf_counter_ns()
        store.append(SIGNAL, batch, retention=retention, now=version)
        return time.perf_counter_ns() - started

    for round_ in range(per_user):
        for user in range(1, users + 1):
            event_id = f"e{round_}-{user}"
            fields = {"event_id": event_id, **field_values(rng)}
            event_ts = start_us + round_ * step_us + rng.randrange(step_us)
            batch.append((str(user), Record(event_id, event_ts, version, fields)))
            if len(batch) >= batch_rows:
                append_ns += flush()
                loaded += len(batch)
                batch, version = [], now_micros()
                if loaded >= next_report:
                    log(f"  {loaded} events loaded")
                    next_report += report_every
    if batch:
        append_ns += flush()
        loaded += len(batch)
    return {
        "events": loaded,
        "append_ns": append_ns,
        "wall_ns": time.perf_counter_ns() - wall_started,
    }


def run_ours_vs_stock(
    kind: str,
    args: Any,
    url: str,
    client: Any,
    run: Callable[[Any, Any, dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Apply a fresh repo per store, run ``run(args, client, stores)``, delete every key written.

    ``stores`` maps "ours" and "stock" to their applied ``FeatureStore``.
    """
    ours_project, stock_project = unique_project(f"{kind}_ours"), unique_project(f"{kind}_stock")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            log("building repos (importing feast takes ~10 s)")
            ours_repo = write_repo(Path(tmp), ours_project, ours_store_config(url))
            stock_repo = write_repo(Path(tmp), stock_project, stock_store_config(url))
            stores = {"ours": apply_repo(ours_repo), "stock": apply_repo(stock_repo)}
            result.update(run(args, client, stores))
        finally:
            removed_ours = drop_ours(url, ours_project)
            removed_stock = drop_stock(client, stock_project)
            log(f"cleanup: {removed_ours} keys (ours), {removed_stock} keys (stock)")
            result["cleanup"] = {
                "ours_keys_removed": removed_ours,
                "stock_keys_removed": removed_stock,
                "keys_left": count_keys(client, f"usp:{ours_project}:*".encode())
                + count_keys(client, b"*" + stock_project.encode()),
            }
    return result


def time_calls(obj: Any, attribute: str) -> list[int]:
    """Wrap ``obj.attribute`` so each call's duration (ns) is appended to the returned list."""
    original = getattr(obj, attribute)
    spent: list[int] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append(time.perf_counter_ns() - started)

    setattr(obj, attribute, timed)
    return spent


# --- HTTP servers under test (bench_http.py, bench_api_load.py) ---------------------------------


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    cmd: list[str], cwd: Path, log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (so :func:`stop_server` ends it and its workers)."""
    with log_file.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(
    port: int, path: str, server: subprocess.Popen[bytes], log_file: Path, timeout_s: float = 180
) -> None:
    """Poll the health endpoint until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited ({server.returncode}):\n{log_file.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"server on port {port} not ready after {timeout_s:.0f} s:\n{log_file.read_text()}"
    )


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop a server this script started (its own session: the server and its workers)."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def process_cpu_seconds(process: Any) -> float:
    """User + system CPU seconds of a ``psutil.Process`` (0 once it has exited)."""
    try:
        times = process.cpu_times()
    except Exception:  # a worker that exited meanwhile
        return 0.0
    return float(times.user + times.system)


def redis_cpu_seconds(client: Any) -> float:
    """CPU seconds the Redis server has used since it started (``INFO cpu``)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
