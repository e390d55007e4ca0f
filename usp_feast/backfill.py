"""The batch path: raw history from Parquet through the stream's own code into both stores.

For one signal and an event-time range, each :class:`~usp_feast.raw_history.HistoryUnit` of the
source (a date partition, or a file) is read and every record goes through
:class:`~usp_feast.processing.SignalProcessor`, the function the streaming job applies to each
Kafka record, so the batch and the stream agree on what is valid and what a row is. Then:

* **versioned store** (the Feast online store): only *new versions* are appended: rows whose
  event is not there yet, or whose newest visible version has other values. A second run over
  the same history appends nothing; a run after a transform fix appends the corrected rows,
  so reads ``as_of`` a time before it still see the old values. Rows older than the view's
  retention are not appended (the store would trim them at once).
* **offline store** (``data/signals/<name>/<date>/``, what ``get_historical_features`` reads):
  the same rule against the newest offline version of each event, with ``created_ts`` set to
  the version's processing time so the corrected row wins the point-in-time join.
* **rejects**: every record that fails the contract or the transform, with the reasons, in
  ``<work_dir>/rejects/<unit>.parquet``, and Great Expectations' HTML report of the unit in
  ``<work_dir>/reports/<unit>.html``.

Finished units are recorded in ``<work_dir>/state.json``; a re-run of the same backfill (same
signal, range, source, suite and transform code) skips them, so an interrupted run resumes. A
unit is redone as a whole, and redoing one is harmless because only new versions are written.

Nothing here depends on running on one machine: a unit is a pure function of its files plus
two lookups, so an engine such as Spark (``mapPartitions`` over units) or Flink batch can run
:func:`compute_unit` at scale (see docs/backfill.md).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from usp_feast.offline import (
    ParquetParts,
    latest_offline_versions,
    signal_offline_rows,
    signal_offline_schema,
)
from usp_feast.pipeline import RejectedEvent, parse_event_time
from usp_feast.processing import DeadLetter, SignalProcessor
from usp_feast.raw_history import HistoryUnit, find_units, read_unit
from usp_feast.store import VersionedStore, now_micros
from usp_feast.versions import Record, to_micros

__all__ = [
    "REJECTS_SCHEMA",
    "BackfillError",
    "BackfillSummary",
    "ComputedUnit",
    "SignalBackfill",
    "TimeRange",
    "UnitResult",
    "compute_unit",
    "new_offline_rows",
    "new_store_rows",
    "parse_bound",
    "stored_fields",
    "unit_rows",
]

logger = logging.getLogger(__name__)

_WRITE_CHUNK = 20_000


class BackfillError(ValueError):
    """A backfill that cannot start; the message says what to fix."""


def parse_bound(text: str) -> datetime:
    """A range bound as users type it: a date (midnight UTC) or an ISO-8601 time with a zone.

    Example:
        >>> parse_bound("2026-11-01").isoformat()
        '2026-11-01T00:00:00+00:00'
        >>> parse_bound("2026-11-01T10:00")
        Traceback (most recent call last):
        ...
        usp_feast.backfill.BackfillError: '2026-11-01T10:00' needs a timezone, e.g. Z

    Raises:
        BackfillError: Not a date or time, or a time without a zone.
    """
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BackfillError(f"{text!r} is not a date or ISO-8601 time") from None
    if moment.tzinfo is None:
        if len(text) > 10:
            raise BackfillError(f"{text!r} needs a timezone, e.g. Z")
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class TimeRange:
    """Event times ``[start, end)``, timezone-aware.

    Example:
        >>> r = TimeRange(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))
        >>> r.contains(datetime(2026, 11, 1, 23, 59, tzinfo=UTC)), r.contains(r.end)
        (True, False)
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise BackfillError("start and end need a timezone (dates are taken as UTC)")
        if self.end <= self.start:
            raise BackfillError(f"end {self.end.isoformat()} is not after start")

    def contains(self, moment: datetime) -> bool:
        """Whether an event time lies in the range."""
        return self.start <= moment < self.end


@dataclass
class ComputedUnit:
    """What the stream's code makes of one unit's records, before anything is written.

    Attributes:
        rows: Signal rows in the range by event id (a repeated id: the last read wins, as the
            newest version does on the stream).
        rejects: Records that failed the contract or the transform.
        events: The records that parsed as JSON objects (for the validation report).
        read: Records read.
        outside: Records whose event time is outside the range (whatever became of them).
        dropped: Valid events in the range that the transform dropped.
    """

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejects: list[DeadLetter] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    read: int = 0
    outside: int = 0
    dropped: int = 0


def compute_unit(
    processor: SignalProcessor[dict[str, Any]],
    batches: Iterable[Sequence[tuple[bytes, Any]]],
    window: TimeRange,
    *,
    keep_events: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ComputedUnit:
    """Run the stream's per-record function over a unit's batches of ``(bytes, position)``.

    Pure apart from reading the batches: no store, no files.
    """
    unit = ComputedUnit()
    for batch in batches:
        for raw, position in batch:
            unit.read += 1
            if keep_events:
                event = _json_object(raw)
                if event is not None:
                    unit.events.append(event)
            outcome = processor.process(raw, position)
            if isinstance(outcome, DeadLetter):
                if _time_in(raw, window) is not False:
                    unit.rejects.append(outcome)
                else:
                    unit.outside += 1
            elif outcome is None:
                if _time_in(raw, window) is False:
                    unit.outside += 1
                else:
                    unit.dropped += 1
            elif window.contains(outcome.row["event_ts"]):
                unit.rows[outcome.row["event_id"]] = outcome.row
            else:
                unit.outside += 1
        if progress is not None:
            progress(len(batch))
    return unit


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _time_in(raw: bytes, window: TimeRange) -> bool | None:
    """Whether a rejected record's event time is in the range; None when it has none."""
    event = _json_object(raw)
    if event is None:
        return None
    try:
        return window.contains(parse_event_time(event.get("event_ts")))
    except RejectedEvent:
        return None


def stored_fields(row: Mapping[str, Any], features: Sequence[str]) -> dict[str, Any]:
    """The fields a row's record holds in the versioned store, as a reader decodes them.

    Example:
        >>> stored_fields({"event_id": "e1", "price": 80.0, "user_id": 3}, ["event_id", "price"])
        {'event_id': 'e1', 'price': 80.0}
    """
    result: dict[str, Any] = orjson.loads(orjson.dumps({name: row.get(name) for name in features}))
    return result


def new_store_rows(
    store: VersionedStore, view: str, features: Sequence[str], rows: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows whose event the store lacks, or shows (newest version) with other values."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_user.setdefault(str(row["user_id"]), []).append(row)
    ranges = {}
    for user, user_rows in by_user.items():
        times = [to_micros(row["event_ts"]) for row in user_rows]
        ranges[user] = (min(times), max(times))
    seen = store.visible(view, ranges)
    fresh = []
    for user, user_rows in by_user.items():
        known = seen.get(user, {})
        for row in user_rows:
            record = known.get(row["event_id"])
            if record is None or not _same_record(record, row, features):
                fresh.append(row)
    return fresh


def _same_record(record: Record, row: Mapping[str, Any], features: Sequence[str]) -> bool:
    return record.event_ts == to_micros(row["event_ts"]) and record.fields == stored_fields(
        row, features
    )


def new_offline_rows(
    folder: Path, kinds: Mapping[str, str], rows: Iterable[dict[str, Any]], version: int
) -> list[dict[str, Any]]:
    """Offline rows (at ``version``) for the rows the offline store lacks or holds otherwise."""
    offline = signal_offline_rows(rows, kinds, version)
    compared = ["user_id", "event_ts", *kinds]
    days = sorted({row["event_ts"].date().isoformat() for row in offline})
    known = latest_offline_versions(folder, days, compared)
    fresh = []
    for row in offline:
        newest = known.get(row["event_id"])
        if newest is None or newest[1] != {name: row[name] for name in compared}:
            fresh.append(row)
    return fresh


@dataclass
class UnitResult:
    """What one unit did (also what ``state.json`` remembers of a finished unit)."""

    unit: str
    read: int = 0
    rejected: int = 0
    dropped: int = 0
    outside: int = 0
    rows: int = 0
    store_versions: int = 0
    offline_rows: int = 0
    beyond_retention: int = 0
    report: str | None = None
    seconds: float = 0.0


@dataclass
class BackfillSummary:
    """The whole run: finished units (this run's and skipped ones) and the time it took."""

    signal: str
    units: list[UnitResult]
    skipped: list[str]
    seconds: float

    def totals(self) -> dict[str, int]:
        """Counts summed over the units this run processed (skipped ones excluded)."""
        done = [u for u in self.units if u.unit not in self.skipped]
        keys = ("read", "rejected", "dropped", "outside", "rows", "store_versions")
        counts = {key: sum(getattr(u, key) for u in done) for key in keys}
        counts["offline_rows"] = sum(u.offline_rows for u in done)
        counts["beyond_retention"] = sum(u.beyond_retention for u in done)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``usp backfill --json``)."""
        return {
            "signal": self.signal,
            "units": len(self.units),
            "skipped_units": len(self.skipped),
            **self.totals(),
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.totals()["read"] / self.seconds, 1)
            if self.seconds
            else None,
        }


class SignalBackfill:
    """Backfill of one signal from raw history over an event-time range.

    Example (see tests/integration/test_backfill.py)::

        backfill = SignalBackfill(repo, config, window, source="history/events.search")
        summary = backfill.run()
    """

    def __init__(
        self,
        repo: Path,
        config: Any,
        window: TimeRange,
        *,
        source: str | None = None,
        report: bool = True,
    ) -> None:
        from feast import FileSource

        import usp_feast.compile  # noqa: F401 (silences Feast's alpha warning on registry loads)
        from usp_feast.contracts import Contract
        from usp_feast.definitions import load_definitions, load_transform, validation_dir
        from usp_feast.feast_sink import FeastSink, signal_kinds
        from usp_feast.online_store import retention_of, store_from_config
        from usp_feast.pipeline import SignalPipeline
        from usp_feast.spec import SignalSpec

        self.repo = repo.resolve()
        self.config = config
        self.window = window
        self.report = report
        definitions = load_definitions(self.repo)
        spec = definitions.signal(config.signal)
        if not isinstance(spec, SignalSpec):
            raise BackfillError(
                f"{spec.name} is a join signal: replay both topics through its join job instead"
            )
        self.spec = spec
        self.source = self._resolve(source or config.source)
        self.suite_path = validation_dir(self.repo) / config.suite
        transform = load_transform(spec, self.repo)
        self.processor = SignalProcessor(
            SignalPipeline(spec, transform), Contract.load(self.suite_path), config.max_event_bytes
        )
        self.sink = FeastSink(self.repo, spec.name)
        view = self.sink.view
        self.features = [f.name for f in view.features]
        self.kinds = signal_kinds(view)
        self.retention: timedelta | None = retention_of(view)
        self.store = store_from_config(self.sink.store.config)
        if not isinstance(view.batch_source, FileSource):
            raise BackfillError(f"{spec.name}: the offline source must be a FileSource")
        self.offline_folder = self._resolve(view.batch_source.path)
        self.work_dir = self._resolve(config.work_dir)
        self.fingerprint = self._fingerprint(transform)

    def _resolve(self, path: str) -> Path:
        resolved = Path(path)
        return resolved if resolved.is_absolute() else self.repo / resolved

    def _fingerprint(self, transform: Any) -> str:
        """What makes two runs the same run (so the second may skip the first's units)."""
        parts = {
            "spec": self.spec.model_dump(mode="json"),
            "suite": hashlib.sha256(self.suite_path.read_bytes()).hexdigest(),
            "transform": hashlib.sha256(
                Path(inspect.getfile(type(transform))).read_bytes()
            ).hexdigest(),
            "start": self.window.start.isoformat(),
            "end": self.window.end.isoformat(),
            "source": str(self.source),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]

    def units(self) -> list[HistoryUnit]:
        """The source's units that may hold events of the range."""
        return find_units(self.source, self.window.start, self.window.end)

    def run(
        self,
        *,
        fresh: bool = False,
        on_unit: Callable[[HistoryUnit, int], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> BackfillSummary:
        """Process every unit not finished by an earlier run of the same backfill.

        Args:
            fresh: Ignore what earlier runs finished (still writes only new versions).
            on_unit: Called before each unit with the unit and its record count.
            progress: Called with the number of records just processed.
        """
        began = time.monotonic()
        state = self._load_state(fresh)
        results: list[UnitResult] = []
        skipped: list[str] = []
        for unit in self.units():
            if unit.name in state["done"]:
                results.append(UnitResult(**state["done"][unit.name]))
                skipped.append(unit.name)
                if progress is not None:
                    progress(unit_rows(unit))
                continue
            if on_unit is not None:
                on_unit(unit, unit_rows(unit))
            result = self.run_unit(unit, progress)
            results.append(result)
            state["done"][unit.name] = asdict(result)
            self._save_state(state)
        return BackfillSummary(self.spec.name, results, skipped, time.monotonic() - began)

    def compute(
        self, unit: HistoryUnit, progress: Callable[[int], None] | None = None
    ) -> ComputedUnit:
        """The unit's rows and rejects, nothing written."""
        return compute_unit(
            self.processor,
            read_unit(unit, self.config.batch_rows),
            self.window,
            keep_events=self.report,
            progress=progress,
        )

    def run_unit(
        self, unit: HistoryUnit, progress: Callable[[int], None] | None = None
    ) -> UnitResult:
        """Compute one unit and write what is new; returns its counts."""
        began = time.monotonic()
        computed = self.compute(unit, progress)
        rows = list(computed.rows.values())
        result = UnitResult(
            unit=unit.name,
            read=computed.read,
            rejected=len(computed.rejects),
            dropped=computed.dropped,
            outside=computed.outside,
            rows=len(rows),
        )
        version = now_micros()
        storable = rows
        if self.retention is not None:
            cutoff = datetime.now(UTC) - self.retention
            storable = [row for row in rows if row["event_ts"] >= cutoff]
            result.beyond_retention = len(rows) - len(storable)
        fresh = new_store_rows(self.store, self.spec.name, self.features, storable)
        for first in range(0, len(fresh), _WRITE_CHUNK):
            self.sink.write(fresh[first : first + _WRITE_CHUNK], version)
        result.store_versions = len(fresh)
        offline = new_offline_rows(self.offline_folder, self.kinds, rows, version)
        parts = ParquetParts(self.offline_folder, signal_offline_schema(self.kinds))
        parts.add(offline)
        parts.flush()
        result.offline_rows = len(offline)
        self._write_rejects(unit, computed.rejects)
        if self.report:
            result.report = str(self._write_report(unit, computed.events))
        result.seconds = round(time.monotonic() - began, 3)
        return result

    def _file_name(self, unit: HistoryUnit) -> str:
        if unit.day is not None:
            return unit.name
        digest = hashlib.sha256(unit.name.encode()).hexdigest()[:10]
        return f"{Path(unit.name).stem}-{digest}"

    def _write_rejects(self, unit: HistoryUnit, rejects: list[DeadLetter]) -> None:
        folder = self.work_dir / "rejects"
        path = folder / f"{self._file_name(unit)}.parquet"
        if not rejects:
            path.unlink(missing_ok=True)  # a redone unit that now has none
            return
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(
            [
                {
                    "topic": r.position.topic,
                    "partition": r.position.partition,
                    "offset": r.position.offset,
                    "reason": "; ".join(v.message for v in r.reasons),
                    "reasons": [
                        {"expectation": v.expectation, "column": v.column, "message": v.message}
                        for v in r.reasons
                    ],
                    "original": r.original,
                }
                for r in rejects
            ],
            schema=REJECTS_SCHEMA,
        )
        partial = folder / f".{path.name}"
        pq.write_table(table, partial)
        partial.rename(path)

    def _write_report(self, unit: HistoryUnit, events: list[dict[str, Any]]) -> Path:
        from usp_feast.ge_report import validate_events

        folder = self.work_dir / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self._file_name(unit)}.html"
        report = validate_events(self.suite_path, events, f"{self.spec.name} {unit.name}")
        path.write_text(report.html)
        return path

    def _load_state(self, fresh: bool) -> dict[str, Any]:
        path = self.work_dir / "state.json"
        if not fresh and path.is_file():
            state: dict[str, Any] = json.loads(path.read_text())
            if state.get("fingerprint") == self.fingerprint:
                return state
        return {"fingerprint": self.fingerprint, "done": {}}

    def _save_state(self, state: dict[str, Any]) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        partial = self.work_dir / ".state.json"
        partial.write_text(json.dumps(state, indent=1, sort_keys=True))
        partial.rename(self.work_dir / "state.json")


REJECTS_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("reason", pa.string()),
        (
            "reasons",
            pa.list_(
                pa.struct(
                    [
                        ("expectation", pa.string()),
                        ("column", pa.string()),
                        ("message", pa.string()),
                    ]
                )
            ),
        ),
        ("original", pa.binary()),
    ]
)
"""Columns of ``<work_dir>/rejects/<unit>.parquet``: where a record was, why, and its bytes."""


def unit_rows(unit: HistoryUnit) -> int:
    """Records in a unit, from the Parquet footers (for progress bars)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in unit.files)
