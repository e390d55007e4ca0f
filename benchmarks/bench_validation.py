"""Event validation cost: compiled contract checks vs Great Expectations per micro-batch.

Generates ``--events`` raw events for one contract (``--suite``, default ``search``: 22
expectations), a ``--invalid-share`` of them with one realistic defect each (missing or null
field, number sent as a string, float or boolean for an int, out-of-range value, bad date, long
string), and validates the same events:

* **compiled**: ``Contract.check(event)`` per event (the streaming path), and
  ``Contract.check_bytes(payload)`` per event including JSON decoding;
* **baseline**: Great Expectations 1.24 per micro-batch of ``--batch-sizes`` events: build the
  all-object DataFrame, ``batch.validate(suite, result_format=COMPLETE)`` on an ephemeral
  context reused for every batch, and read each event's verdict from ``unexpected_index_list``
  (what a dead-letter decision needs). Where GE raises for an expectation (e.g. a string
  compared with a number) it names no rows; such batches are counted.

Reports microseconds per event both ways and their ratio, plus the compiled cost of every
shipped suite. No services needed. Never asserts on time.

Run: ``.venv/bin/python benchmarks/bench_validation.py [--quick] [--events N] [--suite NAME]``
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import warnings
from importlib import metadata
from typing import Any

import _common as c
import orjson

from usp_feast.contracts import Contract

VALIDATION = c.MAIN / "validation"
GOAL_US_PER_EXPECTATION = 3.0  # "a few microseconds per expectation" (compiled check)
RESULT_FORMAT = {"result_format": "COMPLETE", "exclude_unexpected_values": True}

QUERIES = ["beach house", "loft", "cabin near lake", "family apartment", "studio", "villa pool"]
CITIES = ["Paris", "Lisbon", "Rome", "Tokyo", "Cape Town", "Lima", "Oslo", "Austin"]
ROOMS = ["entire_home", "private_room", "shared_room", "hotel_room"]


def valid_event(event_type: str, rng: random.Random, n: int) -> dict[str, Any]:
    """A valid raw event of DESIGN.md section 8's example domain."""
    second = n % 60
    base: dict[str, Any] = {
        "event_id": f"{event_type}-{n:08d}",
        "event_ts": f"2026-11-26T17:{(n // 60) % 60:02d}:{second:02d}.{rng.randrange(1000):03d}Z",
    }
    user = rng.randrange(1, 100_000)
    listing = rng.randrange(1, 1_000_000)
    price = round(rng.uniform(20, 900), 2)
    if event_type == "search":
        day = rng.randrange(1, 20)
        base |= {
            "user_id": user,
            "query": rng.choice(QUERIES),
            "city": rng.choice(CITIES),
            "checkin": f"2026-12-{day:02d}",
            "checkout": f"2026-12-{day + rng.randrange(1, 9):02d}",
            "guests": rng.randrange(1, 17),
        }
    elif event_type == "listing_view":
        base |= {
            "user_id": user,
            "listing_id": listing,
            "city": rng.choice(CITIES),
            "price": price,
            "room_type": rng.choice(ROOMS),
        }
    elif event_type == "wishlist_add":
        base |= {"user_id": user, "listing_id": listing}
    elif event_type == "booking":
        base |= {
            "user_id": user,
            "listing_id": listing,
            "nights": rng.randrange(1, 15),
            "price": price,
        }
    elif event_type == "listing_update":
        base |= {
            "listing_id": listing,
            "price": price,
            "rating": round(rng.uniform(0, 5), 1),
            "available": rng.random() < 0.8,
        }
    else:
        raise SystemExit(f"no event generator for suite {event_type!r}")
    if rng.random() < 0.3:
        base["client"] = {"app": "ios", "version": "5.1.0"}  # extra fields are allowed
    return base


def add_defect(event: dict[str, Any], rng: random.Random) -> None:
    """One realistic defect in place."""
    field = rng.choice([k for k in event if k != "client"])
    value = event[field]
    kind = rng.randrange(7)
    if kind == 0:
        del event[field]
    elif kind == 1:
        event[field] = None
    elif kind == 2:
        event[field] = str(value)  # number sent as a string (GE raises on these in `between`)
    elif kind == 3 and isinstance(value, int) and not isinstance(value, bool):
        event[field] = rng.choice([float(value), True, -value, 10**6 * (value + 1)])
    elif kind == 4 and isinstance(value, str):
        event[field] = value.replace("-", "/").replace("T", " ")
    elif kind == 5 and isinstance(value, str):
        event[field] = value * 60
    else:
        event[field] = rng.choice([[], {"v": value}, 0, -1.5, ""])


def make_events(suite: str, count: int, invalid_share: float, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    for n in range(count):
        event = valid_event(suite, rng, n)
        if rng.random() < invalid_share:
            add_defect(event, rng)
        events.append(event)
    return events


def time_compiled(contract: Contract, events: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """Median over rounds of the per-event cost of check() and check_bytes()."""
    payloads = [orjson.dumps(e) for e in events]
    check, check_bytes = contract.check, contract.check_bytes
    for event in events[:1000]:  # warm-up
        check(event)
    per_event, per_payload = [], []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter_ns()
        for event in events:
            check(event)
        per_event.append((time.perf_counter_ns() - start) / len(events) / 1000)
        start = time.perf_counter_ns()
        for payload in payloads:
            check_bytes(payload)
        per_payload.append((time.perf_counter_ns() - start) / len(events) / 1000)
    wall = time.perf_counter() - wall_start
    return {
        "us_per_event": round(statistics.median(per_event), 3),
        "us_per_event_rounds": [round(x, 3) for x in per_event],
        "us_per_event_check_bytes": round(statistics.median(per_payload), 3),
        "this_process_cpu_pct": round(100 * (time.process_time() - cpu_start) / wall, 1),
    }


class GreatExpectationsBaseline:
    """GE validation of micro-batches on one reused ephemeral context."""

    def __init__(self, suite: dict[str, Any], columns: list[str]) -> None:
        c.log("importing great_expectations (takes several seconds)")
        started = time.perf_counter()
        import great_expectations as gx
        import pandas as pd
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.import_seconds = round(time.perf_counter() - started, 1)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("events").add_dataframe_asset("batch")
        self._batches = asset.add_batch_definition_whole_dataframe("whole")
        self._suite = gx.ExpectationSuite(name=suite["name"], expectations=suite["expectations"])
        self._pd = pd
        self._columns = columns

    def validate(self, events: list[dict[str, Any]]) -> tuple[set[int], bool]:
        """Indices of invalid events, and whether GE raised for some expectation."""
        pd = self._pd
        frame = pd.DataFrame(
            {
                name: pd.Series([event.get(name) for event in events], dtype=object)
                for name in self._columns
            }
        )
        batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
        invalid: set[int] = set()
        raised = False
        for result in batch.validate(self._suite, result_format=RESULT_FORMAT).results:
            info = result.exception_info or {}
            if info.get("raised_exception") or any(
                isinstance(v, dict) and v.get("raised_exception") for v in info.values()
            ):
                raised = True
            invalid.update(result.result.get("unexpected_index_list") or [])
        return invalid, raised


def time_ge(
    ge: GreatExpectationsBaseline,
    contract: Contract,
    events: list[dict[str, Any]],
    batch_size: int,
    max_batches: int,
) -> dict[str, Any]:
    batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
    batches = [b for b in batches if len(b) == batch_size][:max_batches]
    ge.validate(batches[0])  # warm-up, not measured
    times_ns: list[int] = []
    raised_batches = 0
    agree = disagree = 0
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for number, batch in enumerate(batches, 1):
        start = time.perf_counter_ns()
        invalid, raised = ge.validate(batch)
        times_ns.append(time.perf_counter_ns() - start)
        raised_batches += raised
        if not raised:  # sanity check (not timed): same verdicts as the compiled contract
            for i, event in enumerate(batch):
                same = bool(contract.check(event)) == (i in invalid)
                agree += same
                disagree += not same
        if number % 10 == 0:
            c.log(f"  GE batch size {batch_size}: {number}/{len(batches)} batches")
    wall = time.perf_counter() - wall_start
    measured_events = batch_size * len(batches)
    return {
        "batch_size": batch_size,
        "batches": len(batches),
        "events": measured_events,
        "us_per_event": round(sum(times_ns) / measured_events / 1000, 1),
        "ms_per_batch": {
            "p50": round(statistics.median(times_ns) / 1e6, 2),
            "max": round(max(times_ns) / 1e6, 2),
            "mean": round(statistics.fmean(times_ns) / 1e6, 2),
        },
        "batches_where_ge_raised": raised_batches,
        "verdicts_compared": agree + disagree,
        "verdicts_disagreeing": disagree,
        "this_process_cpu_pct": round(100 * (time.process_time() - cpu_start) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2k events, 5 batches")
    parser.add_argument("--suite", default="search", help="contract in validation/ to measure")
    parser.add_argument("--events", type=int, default=20_000, help="generated events")
    parser.add_argument("--invalid-share", type=float, default=0.1, help="share with a defect")
    parser.add_argument("--batch-sizes", default="100,1000", help="GE micro-batch sizes")
    parser.add_argument("--max-batches", type=int, default=40, help="GE batches per size")
    parser.add_argument("--rounds", type=int, default=5, help="compiled passes over the events")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.quick:
        args.events, args.max_batches, args.rounds = 2_000, 5, 3
    batch_sizes = [int(s) for s in args.batch_sizes.split(",")]
    warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")

    suite_path = VALIDATION / f"{args.suite}.json"
    contract = Contract.load(suite_path)
    suite = orjson.loads(suite_path.read_bytes())
    result: dict[str, Any] = {
        "benchmark": "event_validation_cost",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": c.machine_info()
        | {
            "packages_validation": {
                p: metadata.version(p) for p in ("great-expectations", "orjson")
            }
        },
        "params": {
            "suite": args.suite,
            "expectations": len(suite["expectations"]),
            "events": args.events,
            "invalid_share": args.invalid_share,
            "batch_sizes": batch_sizes,
            "max_batches": args.max_batches,
            "rounds": args.rounds,
            "seed": args.seed,
        },
    }

    c.log(f"generating {args.events} {args.suite} events")
    events = make_events(args.suite, args.events, args.invalid_share, args.seed)
    result["params"]["invalid_events"] = sum(1 for e in events if contract.check(e))

    c.log("timing compiled checks")
    compiled = time_compiled(contract, events, args.rounds)
    compiled["us_per_expectation"] = round(compiled["us_per_event"] / len(suite["expectations"]), 3)
    every_suite = {}
    for path in sorted(VALIDATION.glob("*.json")):
        other = Contract.load(path)
        sample = make_events(path.stem, min(args.events, 5_000), args.invalid_share, args.seed)
        every_suite[path.stem] = time_compiled(other, sample, 3)["us_per_event"]
    compiled["us_per_event_by_suite"] = every_suite
    result["compiled"] = compiled

    ge = GreatExpectationsBaseline(suite, list(contract.columns))
    result["great_expectations"] = {"import_seconds": ge.import_seconds, "by_batch_size": {}}
    ratios = {}
    for size in batch_sizes:
        if size > len(events):
            continue
        c.log(f"timing Great Expectations, batches of {size}")
        measured = time_ge(ge, contract, events, size, args.max_batches)
        result["great_expectations"]["by_batch_size"][str(size)] = measured
        ratios[f"ge_batch_{size}_over_compiled"] = c.ratio(
            measured["us_per_event"], compiled["us_per_event"]
        )
    result["ratios"] = ratios
    result["loadavg_1m_after"] = c.load_after()
    result["goal"] = {
        "metric": "compiled check, us per expectation per event",
        "target": GOAL_US_PER_EXPECTATION,
        "measured": compiled["us_per_expectation"],
        "met": compiled["us_per_expectation"] <= GOAL_US_PER_EXPECTATION,
    }
    c.emit(result)


if __name__ == "__main__":
    main()
