"""The demo: live traffic into Kafka, the generated signal jobs on Flink, a live view of readers.

It applies the example repository with Feast, generates its streaming job configs, starts one
Flink job running every signal, produces realistic journeys (with malformed, duplicate and
late events) at a steady rate, and shows what readers see while it runs: a few users' newest
signals through ``SignalClient`` and the dead-letter counts per signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from usp_feast import devstack
from usp_feast.definitions import Definitions, load_definitions
from usp_feast.job_status import JobMonitor, status_view
from usp_feast.kafka_io import producer
from usp_feast.query import SignalClient
from usp_feast.runner import ensure_topics, job_command, job_environment, write_configs
from usp_feast.traffic import TrafficConfig, generate, iso

__all__ = ["DemoStats", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoStats:
    """Counters the live view shows (updated from background threads)."""

    produced: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


def run_demo(
    repo: Path, *, users: int, rate: float, duration: float | None, console: Console
) -> DemoStats:
    """Run the live demo until ``duration`` seconds pass or Ctrl-C."""
    from feast import FeatureStore

    from usp_feast.compile import repo_objects

    definitions = load_definitions(repo)
    kafka = devstack.endpoints().kafka
    console.rule("[bold]1. feast apply + usp generate")
    FeatureStore(repo_path=str(repo)).apply(list(repo_objects(repo).values()))
    streaming = repo.parent / "streaming"
    configs = sorted(write_configs(definitions, streaming))
    ensure_topics(
        kafka,
        definitions.topics([*definitions.signals, *definitions.segments, *definitions.sessions]),
    )
    console.print(
        f"{len(definitions.signals)} signals ({len(definitions.joins)} of them joins), "
        f"{len(definitions.segments)} segments and "
        f"{len(definitions.sessions)} session engagements registered; job configs in {streaming}"
    )

    console.rule("[bold]2. Flink job: Kafka → contract → transform → versioned store")
    log = devstack.state_dir() / "demo-job.log"
    with log.open("ab") as sink:
        job = subprocess.Popen(
            job_command(configs, repo),
            env=job_environment(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    console.print(f"job started (pid {job.pid}, log {log}); producing {rate:.0f} events/s")
    console.print(
        "in another terminal: `.venv/bin/usp status` (the job's metrics live), "
        "`.venv/bin/usp serve` then http://127.0.0.1:8000/ (the signals explorer)"
    )
    stats = DemoStats()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_produce, args=(kafka, users, rate, stats, stop), daemon=True),
        threading.Thread(
            target=_count_dead_letters, args=(kafka, definitions, stats, stop), daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    client = SignalClient.from_repo(repo)
    monitor = JobMonitor()
    health, next_health = status_view([]), 0.0
    watched = [1, 2, 3]
    started, started_at = time.monotonic(), datetime.now(UTC)
    deadline = None if duration is None else started + duration
    first_signal_after: float | None = None
    try:
        with Live(console=console, refresh_per_second=2) as live:
            while deadline is None or time.monotonic() < deadline:
                if job.poll() is not None:
                    raise RuntimeError(f"the Flink job exited ({job.returncode}); see {log}")
                tables, any_signal = _view(client, definitions, watched, stats, started_at)
                elapsed = time.monotonic() - started
                if any_signal and first_signal_after is None:
                    first_signal_after = elapsed
                if first_signal_after is None:
                    # JVM start, job submission and opening every Python operator (each loads
                    # Feast) took 42 s for the example's 8 definitions on a 2-core VM.
                    status = (
                        f"[yellow]starting the Flink job… {elapsed:.0f} s (about half a minute)"
                    )
                else:
                    status = (
                        f"[green]job running; first signal {first_signal_after:.0f} s after start"
                    )
                if time.monotonic() >= next_health:  # the jobs' metrics every 2 s
                    health = status_view([j for j in monitor.sample() if j.pid == job.pid])
                    next_health = time.monotonic() + 2
                live.update(Group(status, tables, health))
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGTERM)
            try:
                job.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(job.pid, signal.SIGKILL)
    console.print(
        f"produced {sum(stats.produced.values())} events, "
        f"{sum(stats.dead_letters.values())} dead letters; job stopped"
    )
    return stats


def _produce(kafka: str, users: int, rate: float, stats: DemoStats, stop: threading.Event) -> None:
    sender = producer(kafka)
    interval = 1.0 / rate
    round_number = 0
    while not stop.is_set():
        round_number += 1
        config = TrafficConfig(users=users, seed=round_number, span=timedelta(minutes=10))
        sent: dict[str, bytes] = {}
        next_send = time.monotonic()
        for event in generate(config):
            if stop.is_set():
                break
            payload = dict(event.payload)
            if event.kind == "duplicate":
                value = sent.get(str(payload.get("event_id")), orjson.dumps(payload))
            else:
                if event.kind == "valid":
                    # Journeys are paced by the send rate: a valid event happens when it is sent;
                    # late and malformed events keep their (old or broken) times.
                    payload["event_ts"] = iso(datetime.now(UTC))
                value = orjson.dumps(payload)
                sent[str(payload.get("event_id"))] = value
            sender.produce(event.topic, value)
            stats.produced[event.kind] += 1
            next_send += interval
            pause = next_send - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sender.poll(0)
    sender.flush(10)


def _count_dead_letters(
    kafka: str, definitions: Definitions, stats: DemoStats, stop: threading.Event
) -> None:
    from confluent_kafka import Consumer

    from usp_feast.connections import kafka_config

    consumer = Consumer(
        kafka_config(
            kafka, {"group.id": f"usp-demo-{time.time_ns()}", "auto.offset.reset": "latest"}
        )
    )
    consumer.subscribe([spec.dead_letter_topic for spec in definitions.signals])
    while not stop.is_set():
        message = consumer.poll(0.5)
        value = None if message is None or message.error() else message.value()
        if value is None:
            continue
        letter = orjson.loads(value)
        stats.dead_letters[letter["signal"]] += 1
        first = letter["reasons"][0] if letter["reasons"] else {"expectation": "?"}
        stats.reasons[f"{first['expectation']} {first.get('column') or ''}".strip()] += 1
    consumer.close()


def _values(values: dict) -> str:
    """Feature values in one short line (top_k pairs shown as their values)."""
    from usp_feast.engagements import feast_value

    return ", ".join(f"{k}={feast_value(v)}" for k, v in values.items() if v not in (None, []))


def _view(
    client: SignalClient,
    definitions: Definitions,
    users: list[int],
    stats: DemoStats,
    since: datetime,
) -> tuple[Group, bool]:
    """The watched users' newest signals and the traffic summary.

    And whether a signal written ``since`` shows (an earlier run's do not count).
    """
    parts = []
    any_signal = False
    for user in users:
        table = Table(title=f"user {user}: newest signals", title_justify="left", expand=True)
        for column in ("event_ts", "signal", "event_id", "values"):
            table.add_column(column)
        rows = []
        for spec in definitions.signals:
            for event in client.recent(user, spec.name, within=timedelta(hours=1), limit=4):
                rows.append((event.event_time, spec.name, event))
        any_signal = any_signal or any(event.processed_at >= since for _, _, event in rows)
        for moment, name, event in sorted(rows, key=lambda r: r[0], reverse=True)[:4]:
            values = ", ".join(
                f"{k}={v}" for k, v in event.fields.items() if k not in ("event_id", "user_id")
            )
            table.add_row(moment.strftime("%H:%M:%S.%f")[:-3], name, event.event_id, values)
        memberships = [
            f"{m.segment} since {m.entered_at:%H:%M:%S}, until {m.expires_at:%Y-%m-%d %H:%M}"
            for m in client.segments(user)
        ]
        engagements = [
            f"{name}: {_values(report.current.values)}"
            for name in client.session_names
            if (report := client.session(user, name, recent=0)).current is not None
        ]
        table.caption = (
            "segments: "
            + ("; ".join(memberships) or "none")
            + "\nsessions now: "
            + ("; ".join(engagements) or "none open")
        )
        table.caption_justify = "left"
        parts.append(table)
    summary = Table(
        "produced", "dead letters by signal", "top reasons", "segment members", expand=True
    )
    summary.add_row(
        "\n".join(f"{k}: {v}" for k, v in sorted(stats.produced.items())),
        "\n".join(f"{k}: {v}" for k, v in sorted(stats.dead_letters.items())) or "none yet",
        "\n".join(f"{k}: {v}" for k, v in stats.reasons.most_common(4)) or "none yet",
        "\n".join(f"{name}: {client.members_index.count(name)}" for name in client.segment_names)
        or "no segments",
    )
    parts.append(summary)
    return Group(*parts), any_signal
