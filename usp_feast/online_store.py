"""Feast online store plugin backed by the append-only versioned store.

Use it from ``feature_store.yaml``::

    online_store:
      type: usp_feast.online_store.VersionedRedisOnlineStore
      connection_string: redis://127.0.0.1:16379

Writes (``push``, ``write_to_online_store``, ``materialize``) append a version per row and never
read before writing; ``get_online_features`` returns the newest event's newest version and
honours the feature view's TTL at read time, even when no new event has arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from feast import Entity, FeatureView, RepoConfig
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel
from pydantic import StrictStr

from usp_feast import devstack
from usp_feast.codec import from_json_value, oneof_for, to_json_value
from usp_feast.durations import parse_duration
from usp_feast.engagements import Engagement, feast_value, served
from usp_feast.keys import entity_tag
from usp_feast.segments import is_member
from usp_feast.store import VersionedStore, connect, now_micros
from usp_feast.versions import Record, from_micros, to_micros

__all__ = [
    "RETENTION_TAG",
    "VersionedRedisOnlineStore",
    "VersionedRedisOnlineStoreConfig",
    "retention_of",
    "store_from_config",
]

logger = logging.getLogger(__name__)

# Feature-view tag carrying how long history is kept; defaults to the view's TTL.
RETENTION_TAG = "usp.retention"
EVENT_ID_FEATURE = "event_id"


class VersionedRedisOnlineStoreConfig(FeastConfigBaseModel):
    """Configuration of :class:`VersionedRedisOnlineStore` (``online_store:`` in the repo)."""

    type: Literal["usp_feast.online_store.VersionedRedisOnlineStore"] = (
        "usp_feast.online_store.VersionedRedisOnlineStore"
    )
    """Online store type selector (the dotted path of the plugin class)."""

    connection_string: StrictStr | None = None
    """Redis URL (``redis://``, ``rediss://`` for TLS); ``${VAR}`` is expanded by Feast.
    Unset: ``$USP_REDIS_URL``, else the local stack of ``usp dev up``. No password here: the
    password and TLS files come from ``USP_REDIS_*`` variables (:mod:`usp_feast.connections`)."""

    redis_type: Literal["redis", "redis_cluster"] = "redis"
    """``redis_cluster`` for Redis Cluster; keys are hash-tagged per entity either way."""

    key_prefix: StrictStr = "usp"
    """First segment of every key, to share one Redis between deployments."""


def store_from_config(config: RepoConfig) -> VersionedStore:
    """The versioned store a Feast repository's online store config points at."""
    online = config.online_store
    if not isinstance(online, VersionedRedisOnlineStoreConfig):
        raise TypeError(
            "feature_store.yaml must set online_store.type to "
            "usp_feast.online_store.VersionedRedisOnlineStore, "
            f"got {type(online).__name__}"
        )
    url = online.connection_string or devstack.endpoints().redis
    client = connect(url, cluster=online.redis_type == "redis_cluster")
    return VersionedStore(client, project=config.project, prefix=online.key_prefix)


def retention_of(table: FeatureView) -> timedelta | None:
    """How long a view's history is kept: its ``usp.retention`` tag, else its TTL."""
    tagged = (table.tags or {}).get(RETENTION_TAG)
    if tagged:
        return parse_duration(tagged)
    if table.ttl and table.ttl > timedelta(0):
        return table.ttl
    return None


class VersionedRedisOnlineStore(OnlineStore):
    """Append-only, versioned Feast online store on Redis."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str, str, str], VersionedStore] = {}
        self._oneofs: dict[tuple[str, int], dict[str, str | None]] = {}

    def _store(self, config: RepoConfig) -> VersionedStore:
        online = config.online_store
        cache_key = (
            config.project,
            online.connection_string,
            online.redis_type,
            online.key_prefix,
        )
        store = self._stores.get(cache_key)
        if store is None:
            store = self._stores[cache_key] = store_from_config(config)
        return store

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Append one version per row; no read-before-write."""
        version = now_micros()
        rows = []
        for entity_key, values, event_time, _created in data:
            event_ts = to_micros(event_time)
            fields = {name: to_json_value(value) for name, value in values.items()}
            event_id = fields.get(EVENT_ID_FEATURE)
            rows.append(
                (
                    _entity(entity_key),
                    Record(
                        event_id=str(event_id) if event_id is not None else str(event_ts),
                        event_ts=event_ts,
                        version=version,
                        fields=fields,
                    ),
                )
            )
        self._store(config).append(table.name, rows, retention=retention_of(table), now=version)
        if progress:
            progress(len(rows))

    def append_rows(
        self,
        config: RepoConfig,
        table: FeatureView,
        join_key: str,
        rows: Sequence[Mapping[str, Any]],
        version: int | None = None,
    ) -> None:
        """Append signal rows given as plain values (the streaming jobs' write path).

        The same records, versions, retention and keys as :meth:`online_write_batch`, without
        the round trip through ``ValueProto``: a row is ``{join_key, "event_id", "event_ts"
        (datetime or ISO-8601 text), <feature>: value, ...}``. ``version`` (µs) defaults to now.
        """
        version = now_micros() if version is None else version
        features = [f.name for f in table.features]
        records = []
        for row in rows:
            moment = row["event_ts"]
            if isinstance(moment, str):
                moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
            records.append(
                (
                    str(row[join_key]),
                    Record(
                        event_id=str(row[EVENT_ID_FEATURE]),
                        event_ts=to_micros(moment),
                        version=version,
                        fields=dict(zip(features, map(row.get, features), strict=True)),
                    ),
                )
            )
        self._store(config).append(table.name, records, retention=retention_of(table), now=version)

    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        """Newest event per entity, dropped when older than the view's TTL.

        A session view serves each entity's current session or window instead, expiry honoured
        at read time (see :func:`usp_feast.engagements.served`).
        """
        if (table.tags or {}).get("usp.kind") == "session":
            return self._read_current(config, table, entity_keys, requested_features)
        since = None
        if table.ttl and table.ttl > timedelta(0):
            since = to_micros(datetime.now(UTC) - table.ttl)
        records = self._store(config).latest(
            table.name, [_entity(k) for k in entity_keys], since=since
        )
        oneofs = self._field_oneofs(table)
        wanted = requested_features or list(oneofs)
        segment = (table.tags or {}).get("usp.kind") == "segment"
        now_ms = now_micros() // 1000
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for record in records:
            if record is None:
                result.append((None, None))
                continue
            stored = _served_membership(record.fields, now_ms) if segment else record.fields
            values = {name: from_json_value(stored.get(name), oneofs.get(name)) for name in wanted}
            result.append((from_micros(record.event_ts), values))
        return result

    def _read_current(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        documents = self._store(config).current(table.name, [_entity(k) for k in entity_keys])
        oneofs = self._field_oneofs(table)
        wanted = requested_features or list(oneofs)
        now_ms = now_micros() // 1000
        result: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for document in documents:
            engagement = served(document, now_ms)
            if engagement is None:
                result.append((None, None))
                continue
            stored = _served_engagement(engagement)
            values = {name: from_json_value(stored.get(name), oneofs.get(name)) for name in wanted}
            moment = engagement.last_event_ms or engagement.started_ms
            result.append((from_micros(moment * 1000), values))
        return result

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Drop the history of feature views removed from the repository."""
        if not tables_to_delete:
            return
        store = self._store(config)
        for table in tables_to_delete:
            removed = store.drop_view(table.name) + _drop_members_index(store, table)
            logger.info("dropped %d keys of removed feature view %s", removed, table.name)

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """Delete every stored version of the given feature views."""
        store = self._store(config)
        for table in tables:
            store.drop_view(table.name)
            _drop_members_index(store, table)

    def _field_oneofs(self, table: FeatureView) -> dict[str, str | None]:
        # Keyed by the schema itself so a re-applied view with new types is not served stale.
        cache_key = (table.name, hash(tuple((f.name, str(f.dtype)) for f in table.features)))
        oneofs = self._oneofs.get(cache_key)
        if oneofs is None:
            oneofs = {f.name: oneof_for(f.dtype.to_value_type()) for f in table.features}
            self._oneofs[cache_key] = oneofs
        return oneofs


def _drop_members_index(store: VersionedStore, table: FeatureView) -> int:
    """A removed segment view takes its members index with it."""
    segment = (table.tags or {}).get("usp.segment")
    if not segment:
        return 0
    from usp_feast.membership import MembersIndex

    return MembersIndex(store.client, project=store.project, prefix=store.prefix).drop(segment)


def _served_membership(stored: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """A stored membership change as Feast serves it at ``now_ms``.

    Expiry holds at read time (a member whose ``expires_at`` passed is not one, even before
    the job's timer fires), and Feast's timestamps are whole seconds where the store keeps ms.
    """
    expires_at, entered_at = stored.get("expires_at"), stored.get("entered_at")
    return {
        **stored,
        "in_segment": is_member(bool(stored.get("in_segment")), expires_at, now_ms),
        "entered_at": None if entered_at is None else entered_at // 1000,
        "expires_at": None if expires_at is None else expires_at // 1000,
    }


def _served_engagement(engagement: Engagement) -> dict[str, Any]:
    """A current session or window as Feast serves it (timestamps in whole seconds)."""
    last = engagement.last_event_ms
    return {
        **{name: feast_value(value) for name, value in engagement.values.items()},
        "started_at": engagement.started_ms // 1000,
        "last_event_at": None if last is None else last // 1000,
        "expires_at": engagement.expires_ms // 1000,
        "closed": engagement.closed,
    }


def _entity(entity_key: EntityKeyProto) -> str:
    return entity_tag([to_json_value(v) for v in entity_key.entity_values])
