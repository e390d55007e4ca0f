"""Cost of the jobs' metrics: per event, next to the work they measure, and per scrape.

Runs the example repository's ``search`` pipeline (``SignalProcessor.process_batch``: JSON,
contract, transform) over ``--events`` generated search events in batches of ``--batch``
(the streaming job's ``batch_max_rows``), and measures in the same run:

* **processing**: ``process_batch`` alone, microseconds per event (what a job does anyway);
* **instrumentation**: what :class:`usp_feast.job_metrics.PipelineMetrics` adds per batch
  (events read, event and ingestion latency, transform latency, dead letters, job latency),
  per event and as a share of processing, given the event and broker times the job holds
  anyway;
* **baseline**: the same four latency observations with ``prometheus_client.Histogram``,
  one ``observe`` call per event (the obvious way), per event;
* **scrape**: rendering the exposition text of 9 pipelines (a job running every example
  definition), milliseconds per scrape, without consumer lag (refreshed from the broker in
  the background, not at scrape time).

No services needed. Never asserts on time.

Run: ``.venv/bin/python benchmarks/bench_job_metrics.py [--quick] [--events N] [--batch N]
[--rounds N]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from datetime import UTC, datetime

import _common as c
import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from usp_feast.contracts import Contract
from usp_feast.definitions import load_definitions, load_transform, validation_dir
from usp_feast.job_metrics import LATENCY_BUCKETS, JobIdentity, JobMetrics, PipelineMetrics
from usp_feast.pipeline import SignalPipeline
from usp_feast.processing import SignalProcessor, SourcePosition, event_time_ms
from usp_feast.traffic import TrafficConfig, generate

REPO = c.MAIN / "feature_repo"


def search_batches(events: int, batch: int) -> list[list[tuple[bytes, SourcePosition]]]:
    """``events`` generated search events (all kinds, malformed included), in batches."""
    now = datetime.now(UTC)
    records: list[tuple[bytes, SourcePosition]] = []
    users = 200
    while len(records) < events:
        config = TrafficConfig(users=users, seed=len(records))  # journeys ending by now
        for event in generate(config):
            if event.event_type == "search":
                broker_ms = int(now.timestamp() * 1000) - 50
                position = SourcePosition(event.topic, 0, len(records), broker_ms)
                records.append((orjson.dumps(event.payload), position))
    records = records[:events]
    return [records[i : i + batch] for i in range(0, len(records), batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="20k events, 2 rounds (smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds = 20_000, 2

    spec = load_definitions(REPO).signal("search")
    contract = Contract.load(validation_dir(REPO) / "search.json")
    processor = SignalProcessor(SignalPipeline(spec, load_transform(spec, REPO)), contract)
    c.log(f"generating {args.events:,} search events")
    batches = search_batches(args.events, args.batch)
    outcomes = [processor.process_batch(b) for b in batches]

    def processing() -> None:
        for records in batches:
            processor.process_batch(records)

    # What the job has at hand anyway: each row's event time (it goes out with the row) and
    # the batch's broker times (they come in with it). Not part of the measured cost.
    times = [
        (
            [event_time_ms(row) for row in outcome.rows],
            [p.timestamp_ms if p.timestamp_ms is not None else -1 for _, p in records],
        )
        for records, outcome in zip(batches, outcomes, strict=True)
    ]

    def instrumentation() -> None:
        metrics = PipelineMetrics("search", "signal", "g", ("events.search",))
        for records, outcome, (event_ms, broker_ms) in zip(batches, outcomes, times, strict=True):
            read_at = time.time()
            metrics.transformed(len(records), 0.0001)
            metrics.batch_read(read_at, len(records), event_ms, broker_ms)
            metrics.dead_letters += len(outcome.dead_letters)
            metrics.rows_stored(len(outcome.rows), read_at)

    def per_event_histograms() -> None:
        registry = CollectorRegistry()
        event, ingestion, transform, job = (
            Histogram(name, name, buckets=LATENCY_BUCKETS, registry=registry)
            for name in ("event", "ingestion", "transform", "job")
        )
        for event_ms, broker_ms in times:
            read_at = time.time()
            for ms in event_ms:
                event.observe(read_at - ms / 1000.0)
                job.observe(0.02)
            for ms in broker_ms:
                if ms >= 0:
                    ingestion.observe(read_at - ms / 1000.0)
                transform.observe(0.0001)

    def best(step: object) -> float:
        """Median seconds of ``--rounds`` runs (collector off while timing)."""
        times = []
        for _ in range(args.rounds):
            gc.collect()
            gc.disable()
            started = time.perf_counter()
            step()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
            gc.enable()
        return statistics.median(times)

    c.log("timing processing, instrumentation and per-event histograms")
    events = sum(len(b) for b in batches)
    processing_s = best(processing)
    instrumentation_s = best(instrumentation)
    per_event_s = best(per_event_histograms)

    collector = JobMetrics(JobIdentity("bench"))
    for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i"):
        metrics = PipelineMetrics(name, "signal", "g", ())
        metrics.batch_read(time.time(), 1000, [int(time.time() * 1000)] * 1000)
        collector.pipelines[name] = metrics
    registry = CollectorRegistry()
    registry.register(collector)
    scrapes = 200
    started = time.perf_counter()
    for _ in range(scrapes):
        text = generate_latest(registry)
    scrape_ms = (time.perf_counter() - started) / scrapes * 1000

    us = 1e6 / events
    c.emit(
        {
            "benchmark": "job_metrics",
            "events": events,
            "batch": args.batch,
            "rounds": args.rounds,
            "processing_us_per_event": round(processing_s * us, 3),
            "instrumentation_us_per_event": round(instrumentation_s * us, 3),
            "instrumentation_share_of_processing": round(instrumentation_s / processing_s, 4),
            "baseline_per_event_histograms_us_per_event": round(per_event_s * us, 3),
            "speedup_vs_per_event_histograms": c.ratio(per_event_s, instrumentation_s),
            "scrape_ms_9_pipelines": round(scrape_ms, 3),
            "scrape_bytes": len(text),
            "machine": c.machine_info(),
        }
    )


if __name__ == "__main__":
    main()
