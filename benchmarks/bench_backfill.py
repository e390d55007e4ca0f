"""Backfill throughput from raw Parquet history, and ``get_historical_features`` over its rows.

Generates ``--events`` raw events of the benchmark signal (vectorized numpy/pyarrow, in the
"columns" layout: one column per event field, ``event_ts`` a UTC timestamp column) in
``date=YYYY-MM-DD`` folders over ``--days`` days ending a day before today, about 1 % of them
failing the signal's expectation suite and 0.1 % repeated (the same event twice). Then:

* **backfill**: ``SignalBackfill(repo, config, window, source=..., report=False).run(fresh=True)``
  (read + validate + transform + store diff + versioned store writes + offline Parquet
  writes), events/s over the whole run, with the time of each phase (timed around the
  backfill's own calls, once per unit or write chunk, so the timing costs nothing);
* **breakdown, same records, nothing written** (the first ``--breakdown-units`` units, 2 by
  default): ``read_unit`` alone, ``Contract.check_bytes`` alone (the validation cost) and
  ``compute_unit`` (validation + transform) per batch;
* **idempotent re-run**: ``run(fresh=True)`` again over the same history (0 new versions
  expected, the counts are reported);
* **Great Expectations HTML report** of one unit (what ``report=True`` adds per unit);
* **get_historical_features**: a ``--entities``-row entity frame against the rows the backfill
  wrote to the offline store, through ``PartitionedParquetOfflineStore`` (DuckDB), and the
  **baseline in the same run**: stock Feast (``offline_store: type: file``, its Dask store) with
  a plain ``FeatureView`` over a ``FileSource`` on the very same Parquet folder, in a second
  throw-away repository. The two result frames are compared row by row.

Every entity row is a random valid event's user at that event's time plus up to 12 hours, so
each has a feature row inside the view's 1-day TTL: Feast 0.67's Dask store fails
("Divisions calculation failed for non-numeric column") on an entity row with no feature row
at all, and drops entity rows whose rows are all outside the TTL (DuckDB returns nulls).

Run: ``.venv/bin/python benchmarks/bench_backfill.py [--quick] [--events N] [--entities N]``
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c

ROWS_PER_FILE = 500_000
INVALID_SHARE = 0.01
DUPLICATE_SHARE = 0.001
ENTITY_LAG_US = 12 * 3_600_000_000  # entity time = a valid event's time + up to 12 h
DAY_US = 86_400_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 200k events, 5k rows")
    parser.add_argument("--events", type=int, default=10_000_000, help="raw events generated")
    parser.add_argument("--users", type=int, default=100_000, help="users the events spread over")
    parser.add_argument("--days", type=int, default=10, help="days of history (one unit each)")
    parser.add_argument("--entities", type=int, default=100_000, help="entity rows of the join")
    parser.add_argument(
        "--breakdown-units",
        type=int,
        default=2,
        help="units read again for the read/validate/compute breakdown (0: all)",
    )
    parser.add_argument("--ghf-rounds", type=int, default=1, help="measured joins per store")
    parser.add_argument("--no-ge-report", action="store_true", help="skip the GE report timing")
    parser.add_argument("--redis", default=c.DEFAULT_REDIS)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.quick:
        args.events, args.users, args.entities, args.days = 200_000, 5_000, 5_000, 4
    url = c.redis_url(args.redis)

    import redis

    client = redis.Redis.from_url(url)
    project = c.unique_project("backfill")
    stock_project = c.unique_project("backfill_stock")
    result: dict[str, Any] = {
        "benchmark": "backfill_and_historical_features",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info(client),
        "params": {
            "events": args.events,
            "users": args.users,
            "days": args.days,
            "entity_rows": args.entities,
            "invalid_share": INVALID_SHARE,
            "duplicate_share": DUPLICATE_SHARE,
            "fields": len(c.FIELDS) + 1,
            "layout": "columns (one column per event field; event_ts a timestamp[us, UTC] "
            "column), one date=YYYY-MM-DD folder per day, files of <= "
            f"{ROWS_PER_FILE:,} rows",
            "suite": "validation/wishlist_add.json copied as the bench suite (12 expectations: "
            "event_id, event_ts, user_id, listing_id present and typed, ids >= 1)",
            "signal_retention": "30d (every generated row is inside it)",
            "api": "SignalBackfill(repo, backfill_config(spec), TimeRange, source=..., "
            "report=False).run(fresh=True)",
        },
        "project": project,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="uspbench-") as tmp:
        try:
            result.update(run(args, url, client, Path(tmp), project, stock_project))
        finally:
            removed = c.drop_ours(url, project)
            c.log(f"cleanup: {removed} keys removed")
            result["cleanup"] = {
                "keys_removed": removed,
                "keys_left": c.count_keys(client, f"usp:{project}:*".encode()),
                "temp_dir_removed": True,
            }
    result["loadavg_1m_after"] = c.load_after()
    result["total_runtime_s"] = round(time.perf_counter() - started, 1)
    c.emit(result)


# --------------------------------------------------------------------------- raw history


def generate_history(
    folder: Path, args: argparse.Namespace, start_us: int
) -> tuple[dict[str, Any], Any]:
    """Write the raw events per day; returns the expected counts and the entity frame."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(args.seed)
    cities, rooms = pa.array(c.CITIES), pa.array(c.ROOMS)
    moment = pa.timestamp("us", tz="UTC")
    per_day = [
        args.events // args.days + (1 if d < args.events % args.days else 0)
        for d in range(args.days)
    ]
    expected = {"events": 0, "records": 0, "invalid": 0, "duplicates": 0, "files": 0}
    entity_users: list[Any] = []
    entity_times: list[Any] = []
    first_id = 0
    for day, count in enumerate(per_day):
        day_start = start_us + day * DAY_US
        ids = np.arange(first_id, first_id + count)
        first_id += count
        stamps = np.sort(rng.integers(day_start, day_start + DAY_US, count))
        users = rng.integers(1, args.users + 1, count)
        listings = rng.integers(1, 5_000_000, count)
        # ~1 % fail the suite: listing_id missing, listing_id 0, or user_id 0 (both below 1).
        defect = rng.random(count) < INVALID_SHARE
        kind = rng.integers(0, 3, count)
        listing_null = defect & (kind == 0)
        listings[defect & (kind == 1)] = 0
        users_out = users.copy()
        users_out[defect & (kind == 2)] = 0
        valid = ~defect
        columns = {
            "event_id": pc.binary_join_element_wise("bf-", pc.cast(pa.array(ids), pa.string()), ""),
            "event_ts": pa.array(stamps, type=moment),
            "user_id": pa.array(users_out, type=pa.int64()),
            "listing_id": pa.array(listings, type=pa.int64(), mask=listing_null),
            "f0": pa.array(rng.integers(1, 10_000_000, count)),
            "f1": pa.array(rng.integers(1, 30, count)),
            "f2": pa.array(rng.integers(1, 17, count)),
            "f3": pa.array(rng.integers(0, 1_000, count)),
            "f4": pa.array(np.round(rng.uniform(20, 900, count), 2)),
            "f5": pa.array(np.round(rng.uniform(0, 5, count), 2)),
            "f6": pa.array(np.round(rng.uniform(0, 1, count), 4)),
            "f7": pc.take(cities, pa.array(rng.integers(0, len(c.CITIES), count))),
            "f8": pc.take(rooms, pa.array(rng.integers(0, len(c.ROOMS), count))),
            "f9": pc.binary_join_element_wise(
                "query ", pc.cast(pa.array(rng.integers(0, 100_000, count)), pa.string()), ""
            ),
        }
        table = pa.table(columns)
        # ~0.1 % of the valid events arrive twice (the copy right after the original).
        valid_index = np.flatnonzero(valid)
        repeated = rng.choice(valid_index, int(count * DUPLICATE_SHARE), replace=False)
        order = np.sort(np.concatenate([np.arange(count), repeated]), kind="stable")
        table = table.take(pa.array(order))
        target = folder / f"date={_day(day_start)}"
        target.mkdir(parents=True)
        for part, first in enumerate(range(0, table.num_rows, ROWS_PER_FILE)):
            pq.write_table(table.slice(first, ROWS_PER_FILE), target / f"part-{part:05d}.parquet")
            expected["files"] += 1
        expected["events"] += count
        expected["records"] += table.num_rows
        expected["invalid"] += int(defect.sum())
        expected["duplicates"] += len(repeated)
        # This day's share of the entity rows: valid events, entity time up to 12 h later.
        share = round(args.entities * count / args.events)
        picked = rng.choice(valid_index, min(share, len(valid_index)), replace=False)
        entity_users.append(users[picked])
        # Up to 12 h later, but before the end of the history (no capping: a capped time
        # could repeat a (user, time) pair, which Feast's Dask store collapses into one row).
        room = np.minimum(ENTITY_LAG_US, start_us + args.days * DAY_US - 1 - stamps[picked])
        entity_times.append(stamps[picked] + (rng.random(len(picked)) * room).astype("int64"))
        c.log(f"  day {day + 1}/{args.days}: {table.num_rows:,} records written")
        del table, columns
    frame = pd.DataFrame(
        {
            "user_id": np.concatenate(entity_users).astype("int64"),
            "event_timestamp": pd.to_datetime(np.concatenate(entity_times), unit="us", utc=True),
        }
    )
    before = len(frame)
    frame = frame.drop_duplicates(["user_id", "event_timestamp"])
    expected["entity_rows_dropped_as_repeated"] = before - len(frame)
    frame = frame.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    frame["row_id"] = np.arange(len(frame), dtype="int64")
    expected["valid_unique_events"] = expected["events"] - expected["invalid"]
    return expected, frame


def _day(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, UTC).date().isoformat()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


# --------------------------------------------------------------------------- the run


def run(
    args: argparse.Namespace,
    url: str,
    client: Any,
    tmp: Path,
    project: str,
    stock_project: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = today - timedelta(days=1)
    start = end - timedelta(days=args.days)
    start_us = int(start.timestamp()) * 1_000_000
    raw = tmp / "raw" / "events.bench"

    c.log(f"generating {args.events:,} raw events over {args.days} days ({args.users:,} users)")
    began = time.perf_counter()
    expected, entity_df = generate_history(raw, args, start_us)
    out["history"] = {
        **expected,
        "range": [start.isoformat(), end.isoformat()],
        "parquet_mb": round(_folder_bytes(raw) / 1e6, 1),
        "generate_s": round(time.perf_counter() - began, 1),
    }
    gc.collect()

    c.log("building and applying the repository (importing feast takes ~10 s)")
    repo = c.write_repo(tmp, project, c.ours_store_config(url))
    c.apply_repo(repo)

    from usp_feast.backfill import SignalBackfill, TimeRange
    from usp_feast.definitions import load_definitions
    from usp_feast.jobs import backfill_config

    spec = load_definitions(repo).signal(c.SIGNAL)
    config = backfill_config(spec)
    window = TimeRange(start, end)
    backfill = SignalBackfill(repo, config, window, source=str(raw), report=False)
    units = backfill.units()
    out["history"]["units"] = len(units)

    memory_before = client.info("memory")["used_memory"]
    c.log(f"backfill run 1 ({len(units)} units)")
    out["backfill"] = timed_run(backfill, client, expected)
    out["backfill"]["redis_used_memory_growth_mb"] = round(
        (client.info("memory")["used_memory"] - memory_before) / 1e6, 1
    )
    out["backfill"]["offline_parquet_mb"] = round(_folder_bytes(backfill.offline_folder) / 1e6, 1)
    gc.collect()

    c.log("breakdown: read_unit, Contract.check_bytes, compute_unit over the same records")
    out["breakdown"] = breakdown(backfill, units, args.breakdown_units, client)
    out["breakdown"]["backfill_events_per_s"] = out["backfill"]["events_per_s"]
    gc.collect()

    c.log("backfill run 2 (idempotent re-run, fresh=True)")
    out["rerun"] = timed_run(backfill, client, None)
    out["rerun"]["new_versions_expected"] = 0
    out["rerun"]["idempotent"] = (
        out["rerun"]["counts"]["store_versions"] == 0
        and out["rerun"]["counts"]["offline_rows"] == 0
    )
    out["rerun"]["seconds_over_first_run"] = c.ratio(
        out["rerun"]["seconds"], out["backfill"]["seconds"]
    )
    gc.collect()

    if not args.no_ge_report:
        c.log("Great Expectations HTML report of one unit")
        out["ge_report_one_unit"] = ge_report(backfill, units[0])
        gc.collect()

    c.log(f"get_historical_features: {len(entity_df):,} entity rows")
    stock_repo = write_stock_repo(tmp, stock_project, backfill.offline_folder)
    out["historical_features"] = historical(args, repo, stock_repo, entity_df, client)
    return {"summary": summary(out), **out}


def summary(out: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers (details below in the result)."""
    run1, split = out["backfill"], out["breakdown"]
    us_per_event = 1e6 / run1["events_per_s"]
    check = split["validation (Contract.check_bytes alone)"]["us_per_event"]
    hist = out["historical_features"]
    return {
        "backfill_events_per_s": run1["events_per_s"],
        "backfill_us_per_event": round(us_per_event, 1),
        "backfill_seconds": run1["seconds"],
        "validation_us_per_event": check,
        "validation_share_of_backfill": round(check / us_per_event, 3),
        "compute_only_events_per_s": split["compute_unit (check_bytes + transform, no writes)"][
            "events_per_s"
        ],
        "rerun_events_per_s": out["rerun"]["events_per_s"],
        "rerun_new_versions": out["rerun"]["counts"]["store_versions"],
        "rerun_new_offline_rows": out["rerun"]["counts"]["offline_rows"],
        "ge_report_one_unit_s": out.get("ge_report_one_unit", {}).get("seconds"),
        "historical_features_s": hist["best_seconds"],
        "historical_features_stock_over_ours": hist["stock_over_ours_time"],
        "historical_features_agree": hist["agreement"]["agree"],
    }


def _totals(summary: Any) -> dict[str, int]:
    return dict(summary.totals())


def timed_run(backfill: Any, client: Any, expected: dict[str, Any] | None) -> dict[str, Any]:
    """One ``run(fresh=True)``, with the time of each phase of each unit."""
    import usp_feast.backfill as module
    from usp_feast.offline import ParquetParts

    timers = {
        "read_validate_transform (compute_unit)": (module, "compute_unit"),
        "store_diff (new_store_rows: Redis range reads + compare)": (module, "new_store_rows"),
        "store_writes (FeastSink.write)": (backfill.sink, "write"),
        "offline_diff (new_offline_rows: read newest offline versions + compare)": (
            module,
            "new_offline_rows",
        ),
        "offline_writes (ParquetParts.flush)": (ParquetParts, "flush"),
        "rejects_parquet": (backfill, "_write_rejects"),
    }
    originals = {name: getattr(obj, attr) for name, (obj, attr) in timers.items()}
    spent = {name: c.time_calls(obj, attr) for name, (obj, attr) in timers.items()}
    try:
        window = c.CpuWindow(client)
        started = time.perf_counter_ns()
        summary = backfill.run(
            fresh=True, on_unit=lambda unit, rows: c.log(f"  {unit.name}: {rows:,} records")
        )
        wall = (time.perf_counter_ns() - started) / 1e9
        cpu = window.stop()
    finally:
        for name, (obj, attr) in timers.items():
            if obj is backfill or obj is backfill.sink:
                delattr(obj, attr)  # the instance attribute hid the class's method
            else:
                setattr(obj, attr, originals[name])
    counts = _totals(summary)
    phases = {name: round(sum(ns) / 1e9, 2) for name, ns in spent.items()}
    phases["other (state, unit listing)"] = round(wall - sum(phases.values()), 2)
    result: dict[str, Any] = {
        "seconds": round(wall, 2),
        "events_per_s": round(counts["read"] / wall),
        "counts": counts,
        "phases_s": phases,
        "phases_share": {name: round(s / wall, 3) for name, s in phases.items()},
        "unit_seconds": [u.seconds for u in summary.units],
        "cpu_during_measurement": cpu,
    }
    if expected is not None:
        result["counts_as_expected"] = {
            "read": counts["read"] == expected["records"],
            "rejected": counts["rejected"] == expected["invalid"],
            "rows": counts["rows"] == expected["valid_unique_events"],
            "store_versions": counts["store_versions"] == expected["valid_unique_events"],
            "offline_rows": counts["offline_rows"] == expected["valid_unique_events"],
        }
    c.log(f"  {result['events_per_s']:,} events/s, {wall:.1f} s, counts {counts}")
    return result


def breakdown(backfill: Any, units: list[Any], limit: int, client: Any) -> dict[str, Any]:
    """Per batch: read it, validate it alone, then compute it (validate + transform)."""
    from usp_feast.backfill import compute_unit
    from usp_feast.contracts import Contract
    from usp_feast.raw_history import read_unit

    contract = Contract.load(backfill.suite_path)
    max_bytes = backfill.config.max_event_bytes
    chosen = units if limit <= 0 else units[:limit]
    read_ns = check_ns = compute_ns = 0
    records = invalid = 0
    window = c.CpuWindow(client)
    for unit in chosen:
        batches: Iterator[Any] = read_unit(unit, backfill.config.batch_rows)
        while True:
            t0 = time.perf_counter_ns()
            batch = next(batches, None)
            t1 = time.perf_counter_ns()
            if batch is None:
                break
            read_ns += t1 - t0
            for payload, _position in batch:
                _event, violations = contract.check_bytes(payload, max_bytes=max_bytes)
                if violations:
                    invalid += 1
            t2 = time.perf_counter_ns()
            compute_unit(backfill.processor, [batch], backfill.window)
            t3 = time.perf_counter_ns()
            check_ns += t2 - t1
            compute_ns += t3 - t2
            records += len(batch)
        c.log(f"  {unit.name} done")
    cpu = window.stop()

    def per_event(ns: int) -> float:
        return round(ns / records / 1000, 2)

    def rate(ns: int) -> int:
        return round(records / (ns / 1e9))

    return {
        "units": len(chosen),
        "records": records,
        "failed_suite": invalid,
        "read_unit (Parquet -> JSON bytes)": {
            "us_per_event": per_event(read_ns),
            "events_per_s": rate(read_ns),
        },
        "validation (Contract.check_bytes alone)": {
            "us_per_event": per_event(check_ns),
            "events_per_s": rate(check_ns),
            "expectations": len(contract._suite.get("expectations", [])),
        },
        "compute_unit (check_bytes + transform, no writes)": {
            "us_per_event": per_event(compute_ns),
            "events_per_s": rate(compute_ns),
        },
        "transform_and_rest (compute_unit - check_bytes)": {
            "us_per_event": per_event(compute_ns - check_ns),
        },
        "cpu_during_measurement": cpu,
    }


def ge_report(backfill: Any, unit: Any) -> dict[str, Any]:
    """What ``report=True`` adds to one unit: GE validates the unit's events, renders HTML."""
    import orjson

    from usp_feast.ge_report import validate_events
    from usp_feast.raw_history import read_unit

    events = [orjson.loads(raw) for batch in read_unit(unit) for raw, _ in batch]
    started = time.perf_counter()
    report = validate_events(backfill.suite_path, events, f"bench {unit.name}")
    seconds = time.perf_counter() - started
    return {
        "unit": unit.name,
        "events": len(events),
        "seconds": round(seconds, 2),
        "us_per_event": round(seconds / len(events) * 1e6, 2),
        "failed_expectations": report.failed_expectations,
        "html_kb": round(len(report.html) / 1000, 1),
        "note": "great_expectations validate(result_format=SUMMARY) + HTML rendering "
        "(usp_feast.ge_report.validate_events); events already parsed",
    }


# --------------------------------------------------------------------------- historical


def write_stock_repo(root: Path, project: str, offline_folder: Path) -> Path:
    """A plain Feast repository: ``file`` offline store, FeatureView over the same Parquet."""
    repo = root / project
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        f"project: {project}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    kinds = {"int": Int64, "float": Float64, "string": String}
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(
        name="bench_plain_source",
        path=str(offline_folder),
        timestamp_field="event_ts",
        created_timestamp_column="created_ts",
    )
    view = FeatureView(
        name="bench_plain",
        entities=[user],
        ttl=timedelta(days=1),
        schema=[Field(name=name, dtype=kinds[kind]) for name, kind in c.FIELDS.items()],
        source=source,
        online=False,
    )
    FeatureStore(repo_path=str(repo)).apply([user, source, view])
    return repo


def historical(
    args: argparse.Namespace, repo: Path, stock_repo: Path, entity_df: Any, client: Any
) -> dict[str, Any]:
    from feast import FeatureStore

    stores = {
        "ours": (FeatureStore(repo_path=str(repo)), [f"{c.SIGNAL}:{n}" for n in c.FIELDS]),
        "stock": (FeatureStore(repo_path=str(stock_repo)), [f"bench_plain:{n}" for n in c.FIELDS]),
    }
    warm = entity_df.head(100)
    warmup_s: dict[str, float] = {}
    for name, (fs, refs) in stores.items():
        started = time.perf_counter()
        fs.get_historical_features(entity_df=warm, features=refs).to_df()
        warmup_s[name] = round(time.perf_counter() - started, 2)
        c.log(f"  warm-up {name} (100 rows): {warmup_s[name]} s")

    seconds: dict[str, list[float]] = {"ours": [], "stock": []}
    cpu: dict[str, list[dict[str, float]]] = {"ours": [], "stock": []}
    frames: dict[str, Any] = {}
    for round_ in range(args.ghf_rounds):
        order = ["ours", "stock"] if round_ % 2 == 0 else ["stock", "ours"]
        for name in order:
            fs, refs = stores[name]
            gc.collect()
            window = c.CpuWindow(client)
            started = time.perf_counter()
            frame = fs.get_historical_features(entity_df=entity_df.copy(), features=refs).to_df()
            seconds[name].append(round(time.perf_counter() - started, 2))
            cpu[name].append(window.stop())
            frames[name] = frame
            c.log(f"  {name}: {seconds[name][-1]} s, {len(frame):,} rows")
    agreement = compare(frames["ours"], frames["stock"], len(entity_df))
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "entity_rows": len(entity_df),
        "seconds": seconds,
        "best_seconds": best,
        "entity_rows_per_s_best": {n: round(len(entity_df) / s) for n, s in best.items()},
        "stock_over_ours_time": c.ratio(best["stock"], best["ours"]),
        "warmup_100_rows_s": warmup_s,
        "cpu_during_measurement": cpu,
        "agreement": agreement,
        "setup": {
            "ours": "the backfill's repository: offline_store "
            "usp_feast.offline_store.PartitionedParquetOfflineStore (DuckDB via ibis), the "
            "signal's SignalView (ttl 1d) over data/signals/bench/<date>/part-*.parquet",
            "stock": "a second repository with offline_store: type: file (Feast's Dask store) "
            "and a plain FeatureView (ttl 1d, f0..f9) over a FileSource on the same folder "
            "(timestamp_field event_ts, created_timestamp_column created_ts); no copy of the "
            "rows was needed",
            "entity_frame": "every entity row is a random valid event's user at that event's "
            "time plus 0-12 h (never past the end of the history; (user, time) pairs unique), so "
            "each has a feature row "
            "inside the 1-day TTL: Feast 0.67's Dask store fails ('Divisions calculation "
            "failed for non-numeric column') on entity rows with no feature row and drops "
            "rows whose feature rows are all outside the TTL",
            "rounds": args.ghf_rounds,
        },
    }


def compare(ours: Any, stock: Any, entity_rows: int) -> dict[str, Any]:
    """Row by row (by ``row_id``): do the two joins return the same features?"""
    fields = list(c.FIELDS)
    merged = ours[["row_id", *fields]].merge(
        stock[["row_id", *fields]], on="row_id", suffixes=("_ours", "_stock"), how="inner"
    )
    differs = None
    per_field: dict[str, int] = {}
    for name in fields:
        left, right = merged[f"{name}_ours"], merged[f"{name}_stock"]
        both_null = left.isna() & right.isna()
        if c.FIELDS[name] == "float":
            same = (left.astype("float64") - right.astype("float64")).abs() <= 1e-9
        else:
            same = left.astype("object") == right.astype("object")
        field_differs = ~(same.fillna(False).astype(bool) | both_null)
        per_field[name] = int(field_differs.sum())
        differs = field_differs if differs is None else differs | field_differs
    differing = int(differs.sum()) if differs is not None else 0
    only_ours = len(set(ours["row_id"]) - set(stock["row_id"]))
    only_stock = len(set(stock["row_id"]) - set(ours["row_id"]))
    return {
        "compared": "every row present in both results, joined on an entity-frame row_id "
        "column; all ten features",
        "entity_rows": entity_rows,
        "rows_ours": len(ours),
        "rows_stock": len(stock),
        "rows_only_in_ours": only_ours,
        "rows_only_in_stock": only_stock,
        "rows_compared": len(merged),
        "rows_without_features_ours": int(ours[fields].isna().all(axis=1).sum()),
        "rows_without_features_stock": int(stock[fields].isna().all(axis=1).sum()),
        "rows_with_different_values": differing,
        "different_values_by_field": per_field,
        "agree": differing == 0 and only_ours == 0 and only_stock == 0,
    }


if __name__ == "__main__":
    main()
