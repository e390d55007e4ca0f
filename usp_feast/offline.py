"""Append rows to the Parquet offline store, one part file per flush (per checkpoint).

Feast's file offline store reads a folder of Parquet files, including sub-folders, so a job
adds history by writing new files and never rewrites one: ``<folder>/<YYYY-MM-DD>/part-<ms>-
<id>.parquet``, one folder per event date so a reader of a date range can skip the rest. The
streaming jobs flush when a checkpoint barrier follows, which keeps files few (one per
checkpoint interval with changes) and means every row a completed checkpoint covers is on disk.
A row flushed for a checkpoint that then fails is written again after the restart: readers of
the offline store get the same values twice at the same time, which a point-in-time join
resolves to the same answer.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ParquetParts"]


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
        self._pending: dict[str, list[Mapping[str, Any]]] = defaultdict(list)

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffer rows (values as Python objects matching the schema) until :meth:`flush`."""
        for row in rows:
            moment: datetime = row[self.time_column]
            self._pending[moment.date().isoformat()].append(row)

    def flush(self) -> list[Path]:
        """Write what is buffered, one new file per event date; returns the files written."""
        written = []
        stamp = int(datetime.now().timestamp() * 1000)  # noqa: DTZ005 (a name, not a time)
        for day, rows in sorted(self._pending.items()):
            folder = self.folder / day
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            table = pa.Table.from_pylist(list(rows), schema=self.schema)
            # Written under a hidden name (readers skip names starting with ".") and renamed,
            # so a reader never sees half a file.
            partial = folder / f".{path.name}"
            pq.write_table(table, partial)
            partial.rename(path)
            written.append(path)
        self._pending.clear()
        return written
