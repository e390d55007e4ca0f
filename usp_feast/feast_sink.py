"""Write signal rows through Feast's online-store path, retrying while the store is down.

Used by the streaming job's store writer: rows go through the repository's provider into the
configured online store (the versioned Redis store), exactly as ``FeatureStore.push`` would
write them, minus the DataFrame round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis
from feast import FeatureStore, FileSource
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from usp_feast.codec import from_json_value, oneof_for
from usp_feast.engagements import feast_value
from usp_feast.offline import ParquetParts, signal_offline_rows, signal_offline_schema
from usp_feast.online_store import VersionedRedisOnlineStore
from usp_feast.segments import row_event_ms
from usp_feast.store import StoreUnavailableError, now_micros
from usp_feast.versions import from_micros

__all__ = [
    "EngagementSink",
    "FeastSink",
    "OverlappedWriter",
    "SegmentSink",
    "retrying",
    "signal_kinds",
]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0


class FeastSink:
    """Batch writer of signal rows into one feature view's online store.

    With ``offline=True`` (signal and join signal views) every version written is also kept
    for the offline store: buffered, and written as Parquet part files at :meth:`checkpoint`.
    """

    def __init__(self, repo: Path, view: str, *, offline: bool = False) -> None:
        self.store = FeatureStore(repo_path=str(repo))
        try:
            self.view = self.store.get_stream_feature_view(view)
        except Exception as exc:  # Feast raises its own not-found types per registry kind
            raise RuntimeError(
                f"feature view {view!r} is not registered in {repo}; run `feast apply` there first"
            ) from exc
        self.provider = self.store._get_provider()
        self.oneofs = {f.name: oneof_for(f.dtype.to_value_type()) for f in self.view.features}
        self.join_key = self.view.entity_columns[0].name if self.view.entity_columns else "user_id"
        self.offline: ParquetParts | None = None
        if offline:
            self.kinds = signal_kinds(self.view)
            self.offline = _offline_parts(repo, self.view, signal_offline_schema(self.kinds))

    def rows_to_feast(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]:
        """Signal rows as the quadruples Feast's online stores take."""
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = []
        for row in rows:
            key = EntityKeyProto(
                join_keys=[self.join_key],
                entity_values=[ValueProto(int64_val=int(row[self.join_key]))],
            )
            values = {
                name: from_json_value(row.get(name), oneof)
                for name, oneof in self.oneofs.items()
                if name != self.join_key
            }
            event_ts = row["event_ts"]
            if isinstance(event_ts, str):
                event_ts = datetime.fromisoformat(event_ts.replace("Z", "+00:00"))
            data.append((key, values, event_ts, None))
        return data

    def write(self, rows: Sequence[Mapping[str, Any]], version: int | None = None) -> None:
        """Write a batch of signal rows (as the pipeline makes them, or parsed from JSON).

        While the store is unavailable, retry with backoff: never drop, never crash.
        ``version`` (µs, default now) is the processing time the rows are recorded at.
        """
        version = now_micros() if version is None else version
        online = getattr(self.provider, "online_store", None)
        if isinstance(online, VersionedRedisOnlineStore):
            # The plugin's plain-value path: same records as online_write_batch, no protos.

            def send() -> None:
                online.append_rows(self.store.config, self.view, self.join_key, rows, version)
        else:
            data = self.rows_to_feast(rows)

            def send() -> None:
                self.provider.online_write_batch(self.store.config, self.view, data, None)

        retrying(send)
        if self.offline is not None:
            self.offline.add(signal_offline_rows(rows, self.kinds, version))

    def checkpoint(self) -> None:
        """Write the buffered offline rows (called before each checkpoint barrier passes)."""
        if self.offline is not None:
            self.offline.flush()

    def describe(self) -> dict[str, Any]:
        """What this sink writes to, for logs."""
        return {"view": self.view.name, "project": self.store.config.project}


def signal_kinds(view: Any) -> dict[str, str]:
    """A signal view's fields as ``name: kind`` (the definition's types), for offline rows."""
    from usp_feast.compile import FEAST_TYPES

    kinds = {dtype: kind for kind, dtype in FEAST_TYPES.items()}
    # The registry's copy of a view lists its entity column among the features.
    keys = {"event_id", *(column.name for column in view.entity_columns)}
    return {f.name: kinds[f.dtype] for f in view.features if f.name not in keys}


def retrying(send: Callable[[], None]) -> None:
    """Call ``send`` until it succeeds, backing off while Redis is unavailable.

    Blocking here backpressures the job instead of losing rows or crashing.
    """
    delay = 0.05
    while True:
        try:
            send()
            return
        except (StoreUnavailableError, redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("store write failed (%s); retrying in %.2fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)


class SegmentSink:
    """Writes a segment's membership changes to every place they are read from.

    History through Feast (online), the members index, and the offline Parquet store (training
    sets). A change is a row of :meth:`usp_feast.segments.MembershipChange.to_row`.
    """

    def __init__(self, repo: Path, segment: str) -> None:
        from usp_feast.membership import MembersIndex
        from usp_feast.online_store import store_from_config

        self.segment = segment
        self.history = FeastSink(repo, f"segment_{segment}")
        store = store_from_config(self.history.store.config)
        self.index = MembersIndex(store.client, project=store.project, prefix=store.prefix)
        self.offline = _offline_parts(repo, self.history.view, OFFLINE_SEGMENT)

    def write(self, changes: Sequence[Mapping[str, Any]]) -> None:
        """History first, so a listed member always has the record behind it; retries.

        Offline rows are buffered until :meth:`checkpoint`.
        """
        if not changes:
            return
        self.history.write(changes)
        retrying(lambda: self.index.apply(self.segment, changes))
        self.offline.add([_offline_row(c) for c in changes])

    def checkpoint(self) -> None:
        """Write the buffered offline rows (called before each checkpoint barrier passes)."""
        self.offline.flush()


# The offline rows of a segment view: what `get_historical_features` joins point in time.
OFFLINE_SEGMENT = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_id", pa.string()),
        ("event_ts", pa.timestamp("ms", tz="UTC")),
        ("in_segment", pa.bool_()),
        ("entered_at", pa.timestamp("ms", tz="UTC")),
        ("expires_at", pa.timestamp("ms", tz="UTC")),
        ("change", pa.string()),
        ("reason", pa.string()),
    ]
)


def _offline_row(change: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "user_id": int(change["user_id"]),
        "event_id": change["event_id"],
        "event_ts": from_micros(row_event_ms(change) * 1000),
        "in_segment": bool(change["in_segment"]),
        "entered_at": from_micros(change["entered_at"] * 1000),
        "expires_at": from_micros(change["expires_at"] * 1000),
        "change": change["change"],
        "reason": change["reason"],
    }


def _offline_parts(repo: Path, view: Any, schema: pa.Schema) -> ParquetParts:
    """Part-file writer into a derived view's offline folder (its FileSource, repo-relative)."""
    source = view.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{view.name}: the offline source must be a FileSource")
    folder = Path(source.path)
    return ParquetParts(folder if folder.is_absolute() else repo / folder, schema)


class EngagementSink:
    """Writes what a session engagement job produces to every place it is read from.

    The job sends two kinds of message (see :mod:`usp_feast.flink_sessions`):
    ``{"user_id", "current"}``, a user's current session or windows, kept as state
    per user (the last per user in a batch wins) and served by the Feast view; and
    ``{"closed": row}``, a closed session's or window's summary
    (:meth:`usp_feast.engagements.Engagement.to_row`), appended to history through Feast and
    to the offline Parquet store.
    """

    def __init__(self, repo: Path, name: str) -> None:
        from feast.type_map import feast_value_type_to_pa
        from feast.value_type import ValueType

        from usp_feast.online_store import store_from_config

        self.name = name
        self.history = FeastSink(repo, name)
        self.store = store_from_config(self.history.store.config)
        view = self.history.view
        moment = pa.timestamp("ms", tz="UTC")
        columns = [("user_id", pa.int64()), ("event_ts", moment)]
        for feature in view.features:
            if feature.name in ("user_id", "event_ts"):
                continue
            value_type = feature.dtype.to_value_type()
            columns.append(
                (
                    feature.name,
                    moment
                    if value_type == ValueType.UNIX_TIMESTAMP
                    else feast_value_type_to_pa(value_type),
                )
            )
        self.timestamps = [
            f.name for f in view.features if f.dtype.to_value_type() == ValueType.UNIX_TIMESTAMP
        ]
        self.offline = _offline_parts(repo, view, pa.schema(columns))

    def write(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Write current state first (what readers see now), then history.

        Retries while Redis is down. Offline rows are buffered until :meth:`checkpoint`.
        """
        current: dict[str, tuple[str, Mapping[str, Any], int]] = {}
        closed = []
        for message in messages:
            if "closed" in message:
                closed.append(message["closed"])
            else:
                user = str(message["user_id"])
                document = message["current"]
                current[user] = (user, document, document["expires"])
        if current:
            documents = list(current.values())
            retrying(
                lambda: self.store.put_current(
                    self.name, documents, now_ms=time.time_ns() // 1_000_000
                )
            )
        if closed:
            self.history.write(closed)
            self.offline.add([self._offline_row(row) for row in closed])

    def checkpoint(self) -> None:
        """Write the buffered offline rows (called before each checkpoint barrier passes)."""
        self.offline.flush()

    def _offline_row(self, row: Mapping[str, Any]) -> dict[str, Any]:
        offline = {name: feast_value(value) for name, value in row.items()}
        for name in self.timestamps:
            if offline.get(name) is not None:
                offline[name] = from_micros(offline[name] * 1000)
        offline["event_ts"] = from_micros(row_event_ms(row) * 1000)
        return offline


class OverlappedWriter:
    """Runs one write in the background while the caller prepares the next batch.

    While Redis applies a batch, the caller validates and transforms the next one. At most one
    write is in flight: :meth:`submit` first waits for the previous write, so writes land in
    order and a slow or unavailable store slows the caller down (backpressure) instead of
    queueing without bound. :meth:`settle` waits for the write in flight and re-raises its error;
    a job calls it before each checkpoint, so a checkpoint never covers an unwritten row.

    Example:
        >>> written = []
        >>> writer = OverlappedWriter(written.append)
        >>> writer.submit([1, 2]); writer.submit([3]); writer.settle()
        >>> written
        [[1, 2], [3]]
    """

    def __init__(self, write: Callable[[Sequence[Any]], None]) -> None:
        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usp-store-writer")
        self._in_flight: Future[None] | None = None

    def submit(self, rows: Sequence[Any], then: Callable[[], None] | None = None) -> None:
        """Wait for the previous write, then start writing ``rows`` (nothing for no rows).

        ``then`` runs in the background once ``rows`` are written (a job measures there).
        """
        self.settle()
        if rows:
            self._in_flight = self._pool.submit(self._write_then, rows, then)

    def _write_then(self, rows: Sequence[Any], then: Callable[[], None] | None) -> None:
        self._write(rows)
        if then is not None:
            then()

    def settle(self) -> None:
        """Wait until everything submitted is written; re-raise a failed write's error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def close(self) -> None:
        """Settle, then stop the background thread."""
        try:
            self.settle()
        finally:
            self._pool.shutdown(wait=True)
