"""Write signal rows through Feast's online-store path, retrying while the store is down.

Used by the streaming job's store writer: rows go through the repository's provider into the
configured online store (the versioned Redis store), exactly as ``FeatureStore.push`` would
write them, minus the DataFrame round trip.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import redis
from feast import FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from usp_feast.codec import from_json_value, oneof_for
from usp_feast.online_store import VersionedRedisOnlineStore
from usp_feast.store import StoreUnavailableError

__all__ = ["FeastSink"]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 5.0


class FeastSink:
    """Batch writer of signal rows (JSON) into one feature view's online store."""

    def __init__(self, repo: Path, view: str) -> None:
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

    def rows_to_feast(
        self, rows: Sequence[str | bytes]
    ) -> list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]]:
        """Signal rows (JSON) as the quadruples Feast's online stores take."""
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]] = []
        for raw in rows:
            row = orjson.loads(raw)
            key = EntityKeyProto(
                join_keys=[self.join_key],
                entity_values=[ValueProto(int64_val=int(row[self.join_key]))],
            )
            values = {
                name: from_json_value(row.get(name), oneof)
                for name, oneof in self.oneofs.items()
                if name != self.join_key
            }
            event_ts = datetime.fromisoformat(row["event_ts"].replace("Z", "+00:00"))
            data.append((key, values, event_ts, None))
        return data

    def write(self, rows: Sequence[str | bytes]) -> None:
        """Write a batch; while the store is unavailable, retry with backoff (never drop)."""
        online = getattr(self.provider, "online_store", None)
        if isinstance(online, VersionedRedisOnlineStore):
            # The plugin's plain-value path: same records as online_write_batch, no protos.
            parsed = [orjson.loads(raw) for raw in rows]

            def send() -> None:
                online.append_rows(self.store.config, self.view, self.join_key, parsed)
        else:
            data = self.rows_to_feast(rows)

            def send() -> None:
                self.provider.online_write_batch(self.store.config, self.view, data, None)

        delay = 0.05
        while True:
            try:
                send()
                return
            except (StoreUnavailableError, redis.ConnectionError, redis.TimeoutError) as exc:
                # Blocking here backpressures the job instead of losing or crashing.
                logger.warning("store write failed (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)

    def describe(self) -> dict[str, Any]:
        """What this sink writes to, for logs."""
        return {"view": self.view.name, "project": self.store.config.project}
