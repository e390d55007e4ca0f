"""Stream = batch: compare what the stream wrote with what the backfill computes.

For one signal and an event-time range, the backfill's computation (nothing written) is
compared event by event with what readers see:

* **store**: every event of the view in the range, at its newest version (users found by
  scanning the view's keys, so events the batch does not know are reported too). Events older
  than the view's retention are not in the store by design and are left out of this side.
* **offline**: every event in the range's date partitions of the offline store, at its newest
  ``created_ts`` (what a point-in-time join resolves it to).

An event is *missing* on one side, or *different* (other values or event time); the report
lists the counts and the first differences of each kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from usp_feast.backfill import SignalBackfill, TimeRange, stored_fields
from usp_feast.offline import latest_offline_versions, signal_offline_rows
from usp_feast.raw_history import days_between
from usp_feast.versions import iso_micros, to_micros

__all__ = ["Difference", "ReconcileReport", "SideReport", "compare", "reconcile"]


@dataclass(frozen=True)
class Difference:
    """One event on which the stream's output and the batch disagree."""

    kind: str
    """``missing_in_stream``, ``missing_in_batch`` or ``different``."""
    event_id: str
    stream: Any = None
    batch: Any = None


@dataclass
class SideReport:
    """The comparison with one store."""

    compared: int = 0
    matched: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"missing_in_stream": 0, "missing_in_batch": 0, "different": 0}
    )
    examples: list[Difference] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """Events that disagree."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "compared": self.compared,
            "matched": self.matched,
            **self.counts,
            "examples": [vars(example) for example in self.examples],
        }


@dataclass
class ReconcileReport:
    """Both comparisons, and what the batch saw."""

    signal: str
    start: str
    end: str
    batch_rows: int
    rejected: int
    store: SideReport
    offline: SideReport
    store_since: str
    """Start of the store comparison (later than ``start`` when retention trimmed history)."""

    @property
    def differences(self) -> int:
        """Events that disagree, both sides together."""
        return self.store.differences + self.offline.differences

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``usp reconcile --json``)."""
        return {
            "signal": self.signal,
            "start": self.start,
            "end": self.end,
            "batch_rows": self.batch_rows,
            "rejected": self.rejected,
            "store_since": self.store_since,
            "store": self.store.to_dict(),
            "offline": self.offline.to_dict(),
            "differences": self.differences,
        }


def compare(stream: Mapping[str, Any], batch: Mapping[str, Any], examples: int = 10) -> SideReport:
    """Compare two ``event_id → value`` maps.

    Example:
        >>> report = compare({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4})
        >>> report.matched, report.counts
        (1, {'missing_in_stream': 1, 'missing_in_batch': 0, 'different': 1})
    """
    report = SideReport()
    for event_id in sorted(set(stream) | set(batch)):
        report.compared += 1
        if event_id not in stream:
            kind = "missing_in_stream"
        elif event_id not in batch:
            kind = "missing_in_batch"
        elif stream[event_id] != batch[event_id]:
            kind = "different"
        else:
            report.matched += 1
            continue
        report.counts[kind] += 1
        if len(report.examples) < examples:
            report.examples.append(
                Difference(kind, event_id, stream.get(event_id), batch.get(event_id))
            )
    return report


def reconcile(backfill: SignalBackfill, examples: int = 10) -> ReconcileReport:
    """Compute the range with the backfill's code and compare it with both stores."""
    window = backfill.window
    rows: dict[str, dict[str, Any]] = {}
    rejected = 0
    for unit in backfill.units():
        computed = backfill.compute(unit)
        rows.update(computed.rows)
        rejected += len(computed.rejects)
    since = window.start
    if backfill.retention is not None:
        since = max(since, datetime.now(UTC) - backfill.retention)
    store_report = compare(
        _store_side(backfill, TimeRange(since, window.end) if since < window.end else None),
        {
            event_id: _store_value(row, backfill.features)
            for event_id, row in rows.items()
            if row["event_ts"] >= since
        },
        examples,
    )
    offline_report = compare(
        _offline_side(backfill), _offline_values(rows.values(), backfill.kinds), examples
    )
    return ReconcileReport(
        signal=backfill.spec.name,
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        batch_rows=len(rows),
        rejected=rejected,
        store=store_report,
        offline=offline_report,
        store_since=since.isoformat(),
    )


def _store_value(row: Mapping[str, Any], features: list[str]) -> dict[str, Any]:
    return {
        "user_id": str(row["user_id"]),
        "event_ts": iso_micros(to_micros(row["event_ts"])),
        "fields": stored_fields(row, features),
    }


def _store_side(backfill: SignalBackfill, window: TimeRange | None) -> dict[str, Any]:
    if window is None:
        return {}
    span = (to_micros(window.start), to_micros(window.end) - 1)
    users = {user: span for user in backfill.store.entities(backfill.spec.name)}
    seen: dict[str, Any] = {}
    for user, records in backfill.store.visible(backfill.spec.name, users).items():
        for record in records.values():
            seen[record.event_id] = {
                "user_id": user,
                "event_ts": iso_micros(record.event_ts),
                "fields": record.fields,
            }
    return seen


def _offline_values(rows: Iterable[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, Any]:
    compared = ["user_id", "event_ts", *kinds]
    return {
        row["event_id"]: {name: row[name] for name in compared}
        for row in signal_offline_rows(rows, kinds, version=0)
    }


def _offline_side(backfill: SignalBackfill) -> dict[str, Any]:
    window = backfill.window
    compared = ["user_id", "event_ts", *backfill.kinds]
    newest = latest_offline_versions(
        backfill.offline_folder, days_between(window.start, window.end), compared
    )
    return {
        event_id: values
        for event_id, (_, values) in newest.items()
        if window.contains(values["event_ts"])
    }
