"""Raw event history in Parquet: what the backfill reads and the traffic generator writes.

Two layouts are read, told apart by their columns:

* **archive**: a ``value`` column holds each event exactly as it was sent to Kafka (JSON, binary
  or text), with optional ``topic``, ``partition``, ``offset`` and ``timestamp`` columns: what a
  topic archiver (Kafka Connect's S3 sink with the byte-array format, say) keeps. The backfill
  then runs the stream's per-record code on the very same bytes, malformed ones included.
* **columns**: one column per event field (a warehouse table of events). A row becomes the JSON
  object of its non-null columns, so a null reads as a missing field, and timestamp columns as
  ISO-8601 UTC text.

Files under a Hive-style ``date=YYYY-MM-DD`` folder (the event date) form one
:class:`HistoryUnit` per date, and only dates that overlap the requested range are read; any
other file is a unit of its own. A unit is what a backfill finishes, records, and skips on a
resumed run.

Example:
    >>> from usp_feast.traffic import RawEvent
    >>> event = RawEvent("search", {"event_id": "e1", "event_ts": "2026-11-26T17:00:00.000Z"})
    >>> written = write_history([event], tmp)
    >>> [p.relative_to(tmp).parent.as_posix() for p in written]
    ['events.search/date=2026-11-26']
    >>> unit, = find_units(tmp / "events.search", datetime(2026, 11, 26, tzinfo=UTC),
    ...                    datetime(2026, 11, 27, tzinfo=UTC))
    >>> unit.name
    'date=2026-11-26'
    >>> [(raw, position.offset) for raw, position in next(read_unit(unit))]
    [(b'{"event_id":"e1","event_ts":"2026-11-26T17:00:00.000Z"}', 0)]
"""

from __future__ import annotations

import glob
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from usp_feast.offline import part_files
from usp_feast.pipeline import RejectedEvent, parse_event_time
from usp_feast.processing import SourcePosition
from usp_feast.traffic import RawEvent
from usp_feast.versions import iso_micros, to_micros

__all__ = [
    "HistoryError",
    "HistoryUnit",
    "days_between",
    "find_units",
    "read_unit",
    "write_history",
]

_DATE_FOLDER = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
_ARCHIVE_SCHEMA = pa.schema(
    [
        ("value", pa.binary()),
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
    ]
)

RawRecord = tuple[bytes, SourcePosition]


class HistoryError(ValueError):
    """The source cannot be read as raw event history; the message says what to fix."""


@dataclass(frozen=True)
class HistoryUnit:
    """One piece of history the backfill processes as a whole.

    Attributes:
        name: ``date=YYYY-MM-DD`` for a date partition, else the file's path.
        files: The Parquet files, in read order.
        day: The event date of a date partition, None for a lone file.
    """

    name: str
    files: tuple[Path, ...]
    day: date | None = None


def find_units(source: str | Path, start: datetime, end: datetime) -> list[HistoryUnit]:
    """The units of ``source`` (a folder, a file, or a glob) that may hold events in the range.

    Args:
        source: Where the history is; a folder means every ``*.parquet`` below it.
        start: First event time wanted (inclusive).
        end: Event time where the range ends (exclusive).

    Raises:
        HistoryError: When nothing matches ``source``.
    """
    files = _expand(str(source))
    if not files:
        raise HistoryError(f"no Parquet files at {source}; pass --source PATH_OR_GLOB")
    by_day: dict[date, list[Path]] = defaultdict(list)
    lone: list[HistoryUnit] = []
    for path in files:
        day = _partition_day(path)
        if day is None:
            lone.append(HistoryUnit(name=str(path), files=(path,)))
        elif (
            start.astimezone(UTC).date() <= day
            and datetime.combine(day, datetime.min.time(), UTC) < end
        ):
            by_day[day].append(path)
    dated = [
        HistoryUnit(name=f"date={day.isoformat()}", files=tuple(paths), day=day)
        for day, paths in sorted(by_day.items())
    ]
    return dated + lone


def _expand(source: str) -> list[Path]:
    """Parquet files of a folder, a file or a glob, minus those still being written.

    Writers put unfinished files under hidden names or folders (``.part-…``, Spark's
    ``_temporary/``): any name below the source's fixed part that starts with ``.`` or ``_``.
    """
    path = Path(source)
    if path.is_dir() or path.is_file():
        return part_files(path)
    fixed = Path(*[p for p in itertools.takewhile(lambda p: not glob.has_magic(p), path.parts)])
    found = (Path(p) for p in glob.glob(source, recursive=True))
    return sorted(
        p
        for p in found
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(fixed).parts)
    )


def _partition_day(path: Path) -> date | None:
    for part in reversed(path.parent.parts):
        match = _DATE_FOLDER.match(part)
        if match:
            return date.fromisoformat(match.group(1))
    return None


def read_unit(unit: HistoryUnit, batch_rows: int = 50_000) -> Iterator[list[RawRecord]]:
    """The unit's records in batches: each the event's bytes and where it came from.

    Raises:
        HistoryError: A file in neither layout, or one that is not Parquet.
    """
    for path in unit.files:
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise HistoryError(f"{path}: not a readable Parquet file ({exc})") from None
        names = parquet.schema_arrow.names
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows):
            if "value" in names:
                records = _archive_records(batch, path, row)
            else:
                records = _column_records(batch, path, row)
            row += batch.num_rows
            yield records


def _archive_records(batch: pa.RecordBatch, path: Path, first_row: int) -> list[RawRecord]:
    columns = batch.to_pydict()
    values = columns["value"]
    count = len(values)
    topics = columns.get("topic") or [str(path)] * count
    partitions = columns.get("partition") or [0] * count
    offsets = columns.get("offset") or range(first_row, first_row + count)
    stamps = columns.get("timestamp") or [None] * count
    records = []
    for index, value in enumerate(values):
        raw = value.encode() if isinstance(value, str) else bytes(value or b"")
        stamp = stamps[index]
        position = SourcePosition(
            topics[index],
            partitions[index],
            offsets[index],
            int(stamp.timestamp() * 1000) if isinstance(stamp, datetime) else stamp,
        )
        records.append((raw, position))
    return records


def _column_records(batch: pa.RecordBatch, path: Path, first_row: int) -> list[RawRecord]:
    records = []
    for index, row in enumerate(batch.to_pylist()):
        event = {name: _json_value(value) for name, value in row.items() if value is not None}
        records.append((orjson.dumps(event), SourcePosition(str(path), 0, first_row + index)))
    return records


def _json_value(value: Any) -> Any:
    # A timestamp column holds what producers send as ISO-8601 UTC text.
    return iso_micros(to_micros(value)) if isinstance(value, datetime) else value


def write_history(
    events: Iterable[RawEvent], folder: Path, rows_per_file: int = 500_000
) -> list[Path]:
    """Write events in the archive layout: ``<folder>/<topic>/date=<event date>/part-N.parquet``.

    Each event keeps the exact bytes a producer sends (malformed ones too). Its date is its
    event time's; an event whose time cannot be read goes with the event before it.

    Returns:
        The files written.
    """
    # (topic, day) → rows; offsets count per topic, as a single-partition topic would.
    pending: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    offsets: dict[str, int] = defaultdict(int)
    written: list[Path] = []
    counters: dict[tuple[str, str], int] = defaultdict(int)
    last_time = datetime.now(UTC)
    for event in events:
        moment = _event_time(event.payload) or last_time
        last_time = moment
        place = (event.topic, moment.date().isoformat())
        pending[place].append(
            {
                "value": orjson.dumps(event.payload),
                "topic": event.topic,
                "partition": 0,
                "offset": offsets[event.topic],
                "timestamp": moment,
            }
        )
        offsets[event.topic] += 1
        if len(pending[place]) >= rows_per_file:
            written.append(_write_part(folder, place, pending.pop(place), counters))
    for place, rows in sorted(pending.items()):
        written.append(_write_part(folder, place, rows, counters))
    return written


def _event_time(payload: dict[str, Any]) -> datetime | None:
    try:
        return parse_event_time(payload.get("event_ts"))
    except RejectedEvent:
        return None


def _write_part(
    folder: Path,
    place: tuple[str, str],
    rows: list[dict[str, Any]],
    counters: dict[tuple[str, str], int],
) -> Path:
    topic, day = place
    target = folder / topic / f"date={day}"
    target.mkdir(parents=True, exist_ok=True)
    while True:  # never overwrite history already there
        path = target / f"part-{counters[place]:05d}.parquet"
        counters[place] += 1
        if not path.exists():
            break
    partial = target / f".{path.name}"
    pq.write_table(pa.Table.from_pylist(rows, schema=_ARCHIVE_SCHEMA), partial)
    partial.rename(path)
    return path


def days_between(start: datetime, end: datetime) -> list[str]:
    """``YYYY-MM-DD`` of every day overlapping ``[start, end)``.

    Example:
        >>> days_between(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
        ['2026-11-01', '2026-11-02']
    """
    days = []
    day = start.astimezone(UTC).date()
    while datetime.combine(day, datetime.min.time(), UTC) < end:
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days
