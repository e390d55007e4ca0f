"""Append rows to the Parquet offline store, one part file per flush (per checkpoint).

Feast's file offline store reads a folder of Parquet files, including sub-folders, so a job
adds history by writing new files and never rewrites one: ``<folder>/<YYYY-MM-DD>/part-<ms>-
<id>.parquet``, one folder per event date so a reader of a date range can skip the rest. The
streaming jobs flush when a checkpoint barrier follows, which keeps files few (one per
checkpoint interval with changes) and means every row a completed checkpoint covers is on disk.
A row flushed for a checkpoint that then fails is written again after the restart: readers of
the offline store get the same values twice at the same time, which a point-in-time join
resolves to the same answer.

A signal's offline rows carry ``created_ts``, the processing time of the version they record
(the same version the versioned store holds). The offline store reads each event's newest
version only (:mod:`usp_feast.offline_store`), so a corrected value written by a backfill
replaces the stream's original in training sets, as it does in online reads.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from usp_feast.versions import from_micros, to_micros

__all__ = [
    "CREATED_COLUMN",
    "OfflineVersion",
    "ParquetParts",
    "latest_offline_versions",
    "part_files",
    "signal_offline_rows",
    "signal_offline_schema",
]

CREATED_COLUMN = "created_ts"
"""Processing time of the version an offline row records; the newest version is read."""

_MOMENT = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": _MOMENT,
}


class ParquetParts:
    """Buffers rows and writes them as new Parquet part files under ``folder``.

    Example:
        >>> from datetime import UTC
        >>> parts = ParquetParts(tmp, pa.schema([("user_id", pa.int64()),
        ...                                      ("event_ts", pa.timestamp("us", tz="UTC"))]))
        >>> parts.add([{"user_id": 7, "event_ts": datetime(2026, 11, 27, tzinfo=UTC)}])
        >>> [p.parent.name for p in parts.flush()]
        ['2026-11-27']
        >>> parts.flush()  # nothing pending: no file
        []

    """

    def __init__(self, folder: Path, schema: pa.Schema, time_column: str = "event_ts") -> None:
        self.folder = folder
        self.schema = schema
        self.time_column = time_column
        self._pending: dict[str, list[pa.Table]] = defaultdict(list)

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffer rows (values as Python objects matching the schema) until :meth:`flush`.

        Rows become Arrow columns here, in the caller's thread (a job's background store
        writer), so the flush before a checkpoint barrier only writes files.
        """
        by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            moment: datetime = row[self.time_column]
            by_day[moment.date().isoformat()].append(row)
        for day, day_rows in by_day.items():
            self._pending[day].append(pa.Table.from_pylist(day_rows, schema=self.schema))

    def flush(self) -> list[Path]:
        """Write what is buffered, one new file per event date; returns the files written."""
        written = []
        stamp = int(datetime.now().timestamp() * 1000)  # noqa: DTZ005 (a name, not a time)
        for day, tables in sorted(self._pending.items()):
            folder = self.folder / day
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            table = pa.concat_tables(tables)
            # Written under a hidden name (readers skip names starting with ".") and renamed,
            # so a reader never sees half a file.
            partial = folder / f".{path.name}"
            pq.write_table(table, partial)
            partial.rename(path)
            written.append(path)
        self._pending.clear()
        return written


def signal_offline_schema(fields: Mapping[str, str]) -> pa.Schema:
    """The offline columns of a signal with these ``name: kind`` fields.

    Example:
        >>> signal_offline_schema({"city": "string"}).names
        ['user_id', 'event_id', 'event_ts', 'created_ts', 'city']
    """
    columns = [
        ("user_id", pa.int64()),
        ("event_id", pa.string()),
        ("event_ts", _MOMENT),
        (CREATED_COLUMN, _MOMENT),
    ]
    columns += [(name, _ARROW_TYPES[kind]) for name, kind in fields.items()]
    return pa.schema(columns)


def signal_offline_rows(
    rows: Iterable[Mapping[str, Any]], fields: Mapping[str, str], version: int
) -> list[dict[str, Any]]:
    """Signal rows as offline rows of :func:`signal_offline_schema`, written at ``version`` (µs).

    Event times may be datetimes or ISO-8601 text (rows parsed from a signal topic); a
    ``timestamp`` field may be ISO-8601 text or epoch seconds.

    Example:
        >>> row = {"user_id": 4, "event_id": "e1", "event_ts": "2026-11-26T17:00:00Z", "n": 2}
        >>> out = signal_offline_rows([row], {"n": "int"}, version=1_795_712_401_000_000)[0]
        >>> out["event_ts"].isoformat(), out["created_ts"].isoformat(), out["n"]
        ('2026-11-26T17:00:00+00:00', '2026-11-26T17:00:01+00:00', 2)
    """
    created = from_micros(version)
    stamps = [name for name, kind in fields.items() if kind == "timestamp"]
    out = []
    for row in rows:
        offline = {name: row.get(name) for name in fields}
        for name in stamps:
            offline[name] = _moment(offline[name])
        offline.update(
            user_id=int(row["user_id"]),
            event_id=str(row["event_id"]),
            event_ts=_moment(row["event_ts"]),
            created_ts=created,
        )
        out.append(offline)
    return out


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # Without a zone the text is UTC, as everywhere in the store (never the host's zone).
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return from_micros(int(value * 1_000_000))


OfflineVersion = tuple[int, dict[str, Any]]
"""An event's newest offline version: ``(created_ts µs, {field: value})``."""


def latest_offline_versions(
    folder: Path, days: Iterable[str], fields: Sequence[str]
) -> dict[str, OfflineVersion]:
    """The newest offline version of every event in the given ``YYYY-MM-DD`` partitions.

    What the offline store reads for an event: of the rows with one ``event_id``, the one with
    the newest ``created_ts``.
    """
    files = [
        str(path) for day in days if (folder / day).is_dir() for path in part_files(folder / day)
    ]
    newest: dict[str, OfflineVersion] = {}
    if not files:
        return newest
    table = ds.dataset(files, format="parquet").to_table(
        columns=["event_id", CREATED_COLUMN, *fields]
    )
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    for index, event_id in enumerate(columns["event_id"]):
        created = to_micros(columns[CREATED_COLUMN][index])
        known = newest.get(event_id)
        if known is None or created >= known[0]:
            newest[event_id] = (created, {name: columns[name][index] for name in fields})
    return newest


def part_files(folder: Path) -> list[Path]:
    """The readable Parquet files under ``folder`` (hidden names are parts being written)."""
    if folder.is_file():
        return [folder]
    return sorted(
        path
        for path in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)
    )
