"""The append-only, versioned record store on Redis.

One sorted set per (entity, view), scored by event time; see :mod:`usp_feast.versions` for the
member format and :mod:`usp_feast.keys` for the key layout. Writes only ever add members
(ZADD); retention trimming is the single path that removes any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from importlib import resources
from typing import Any, cast

import orjson
import redis
import redis.asyncio
import redis.asyncio.cluster
from redis.cluster import RedisCluster

from usp_feast.connections import redis_options, redis_problem, resolve_redis_url
from usp_feast.filters import Filter
from usp_feast.keys import current_key, current_pattern, signal_key, view_pattern
from usp_feast.versions import (
    Record,
    collapse_versions,
    decode_member,
    duration_micros,
    encode_member,
)

__all__ = [
    "MAX_APPEND_ROWS",
    "MAX_FILTER_SCAN",
    "MAX_SCAN",
    "AsyncRecentReader",
    "ScanLimitError",
    "StoreUnavailableError",
    "VersionedStore",
    "connect",
    "now_micros",
]

logger = logging.getLogger(__name__)

# Upper bound on members one history read may scan on the server, so a pathological key
# (thousands of versions of each event) cannot stall Redis.
MAX_SCAN = 20_000
# A filtered read decodes every member it examines inside Redis (~4 µs each measured here,
# benchmarks/README.md), and a script blocks other clients while it runs: ~20 ms at most.
MAX_FILTER_SCAN = 5_000
# Rows per append script call (one call holds Redis for about a millisecond per 1,000 rows).
MAX_APPEND_ROWS = 1_000
_LATEST_VERSION = "9" * 16

RedisClient = redis.Redis | RedisCluster


class StoreUnavailableError(RuntimeError):
    """Redis could not be reached."""


class ScanLimitError(RuntimeError):
    """A history read would scan more than ``MAX_SCAN`` stored versions to fill its page."""


def now_micros() -> int:
    """Current processing time in microseconds since the epoch."""
    return time.time_ns() // 1000


def connect(url: str, *, cluster: bool = False, **options: Any) -> RedisClient:
    """Open a Redis (or Redis Cluster) client from a ``redis://`` / ``rediss://`` URL.

    The ACL user, password and TLS files come from the environment
    (:func:`usp_feast.connections.redis_options`), ``${VAR}`` in the URL is expanded.

    Args:
        url: Connection URL; a bare ``host:port`` is accepted too.
        cluster: Connect to a Redis Cluster.
        **options: Passed to redis-py, over the environment's (e.g. ``socket_timeout``).

    Raises:
        ConnectionSettingsError: A connection variable holds a setting that cannot work.

    """
    url = resolve_redis_url(url)
    options = {**redis_options(url), **options}
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def _script(name: str) -> str:
    return resources.files("usp_feast").joinpath(name).read_text()


def _recent_args(
    since: int | None,
    until: int | None,
    limit: int,
    as_of: int | None,
    where: Filter | None,
    oldest_first: bool,
) -> list[Any]:
    return [
        "+inf" if until is None else until,
        "-inf" if since is None else since,
        limit,
        _LATEST_VERSION if as_of is None else f"{as_of:016d}",
        MAX_SCAN if where is None else MAX_FILTER_SCAN,
        "" if where is None else where.to_json(),
        "oldest" if oldest_first else "newest",
    ]


def _recent_members(reply: Any, limit: int, filtered: bool) -> Any:
    """The members of a ``recent.lua`` reply (``reply[2]`` holds their version counts)."""
    complete, members, _ = reply
    if not complete:
        cap, name = (MAX_FILTER_SCAN, "MAX_FILTER_SCAN") if filtered else (MAX_SCAN, "MAX_SCAN")
        raise ScanLimitError(
            f"the read scanned its limit of {cap:,} stored versions ({name}) before finding "
            f"{limit} matching events; narrow the time window or the filter, or ask for "
            "fewer events"
        )
    return members


def _recent_records(reply: Any, limit: int, filtered: bool) -> list[Record]:
    return [decode_member(m) for m in _recent_members(reply, limit, filtered)]


def _counted_records(reply: Any, limit: int, filtered: bool) -> list[tuple[Record, int]]:
    members = _recent_members(reply, limit, filtered)
    counts = [1] * len(members)
    # Only events with more than one version are listed: position (from 1), count, ...
    pairs = iter(reply[2])
    for position, count in zip(pairs, pairs, strict=True):
        counts[position - 1] = count
    return [(decode_member(m), n) for m, n in zip(members, counts, strict=True)]


class AsyncRecentReader:
    """The history read of :meth:`VersionedStore.recent` on an asyncio Redis client.

    The HTTP API uses it so its event loop serves other requests while Redis answers.
    """

    def __init__(self, url: str, *, project: str, prefix: str = "usp", cluster: bool = False):
        url = resolve_redis_url(url)
        options = redis_options(url)
        if cluster:
            self.client: Any = redis.asyncio.cluster.RedisCluster.from_url(url, **options)
        else:
            self.client = redis.asyncio.Redis.from_url(url, **options)
        self.project, self.prefix = project, prefix
        self._script = self.client.register_script(_script("recent.lua"))

    async def recent(
        self,
        view: str,
        entity: str,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int = 50,
        as_of: int | None = None,
        where: Filter | None = None,
        oldest_first: bool = False,
    ) -> list[Record]:
        """Same contract as :meth:`VersionedStore.recent`."""
        if limit <= 0:
            return []
        reply = await self._read(view, entity, since, until, limit, as_of, where, oldest_first)
        return _recent_records(reply, limit, where is not None)

    async def recent_with_versions(
        self,
        view: str,
        entity: str,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int = 50,
        as_of: int | None = None,
        where: Filter | None = None,
        oldest_first: bool = False,
    ) -> list[tuple[Record, int]]:
        """Same contract as :meth:`VersionedStore.recent_with_versions`."""
        if limit <= 0:
            return []
        reply = await self._read(view, entity, since, until, limit, as_of, where, oldest_first)
        return _counted_records(reply, limit, where is not None)

    async def _read(
        self,
        view: str,
        entity: str,
        since: int | None,
        until: int | None,
        limit: int,
        as_of: int | None,
        where: Filter | None,
        oldest_first: bool,
    ) -> Any:
        key = signal_key(self.prefix, self.project, entity, view)
        args = _recent_args(since, until, limit, as_of, where, oldest_first)
        try:
            return await self._script(keys=[key], args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            reason = redis_problem(exc) or f"Redis is not reachable ({exc})"
            raise StoreUnavailableError(reason) from exc

    async def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(await self.client.ping())
        except redis.RedisError:
            return False


class VersionedStore:
    """Append-only versioned records per entity and view, on one Redis deployment.

    Example:
        >>> store = VersionedStore(connect(redis_url), project="doc")
        >>> r = Record("e1", event_ts=now_micros(), version=now_micros(), fields={"q": "x"})
        >>> store.append("search", [("42", r)])
        1
        >>> [x.event_id for x in store.recent("search", "42", limit=10)]
        ['e1']
        >>> store.drop_project()
        1

    """

    def __init__(self, client: RedisClient, project: str, prefix: str = "usp") -> None:
        self.client = client
        self.project = project
        self.prefix = prefix
        # redis-py types register_script for Redis only; RedisCluster has it too.
        self._recent_script = cast(Any, client).register_script(_script("recent.lua"))
        self._append_script = cast(Any, client).register_script(_script("append.lua"))

    def key(self, view: str, entity: str) -> str:
        """The sorted-set key of one entity's records of one view."""
        return signal_key(self.prefix, self.project, entity, view)

    def append(
        self,
        view: str,
        rows: Iterable[tuple[str, Record]],
        *,
        retention: timedelta | None = None,
        now: int | None = None,
    ) -> int:
        """Append record versions (one script call per 1,000 rows); never overwrites.

        Args:
            view: Feature view (signal) name.
            rows: ``(entity, record)`` pairs.
            retention: Records whose event time is older than ``now - retention`` are trimmed
                and idle keys expire after it; None keeps everything.
            now: Processing time in µs used for retention (default: the clock).

        Returns:
            The number of records sent.

        """
        grouped: dict[str, list[Any]] = {}
        by_entity: dict[str, list[Any]] = {}  # the same lists, found without building the key
        for entity, record in rows:
            pairs = by_entity.get(entity)
            if pairs is None:
                pairs = by_entity[entity] = grouped[self.key(view, entity)] = []
            pairs.append(record.event_ts)
            pairs.append(encode_member(record))
        if not grouped:
            return 0
        cutoff = expiry = ""
        if retention is not None:
            retention_us = duration_micros(retention)
            cutoff = str((now_micros() if now is None else now) - retention_us)
            expiry = str(retention_us // 1000 + 1000)
        calls = [(keys, [cutoff, expiry, *body]) for keys, body in self._append_calls(grouped)]
        if isinstance(self.client, RedisCluster) and len(calls) > 1:
            return sum(self._run_per_master(self._append_script, calls))
        return sum(self._run(self._append_script, keys, args) for keys, args in calls)

    def _append_calls(self, grouped: dict[str, list[Any]]) -> Iterator[tuple[list[str], list[Any]]]:
        """Split a batch into script calls: keys of one hash slot, at most MAX_APPEND_ROWS rows.

        A script runs atomically, so the row bound is what keeps reads flowing during bulk
        writes. Yields each call's keys and its per-key ``n, score, member, ...`` arguments.
        """
        slots = self._by_slot(grouped)
        if len(slots) == 1 and sum(map(len, grouped.values())) <= 2 * MAX_APPEND_ROWS:
            # The common case (a streaming batch): one call, nothing to split.
            whole: list[Any] = []
            for pairs in grouped.values():
                whole.append(len(pairs) // 2)
                whole += pairs
            yield slots[0], whole
            return
        for keys in slots:
            call_keys: list[str] = []
            body: list[Any] = []
            rows = 0
            for key in keys:
                pairs = grouped[key]
                for start in range(0, len(pairs), 2 * MAX_APPEND_ROWS):
                    part = pairs[start : start + 2 * MAX_APPEND_ROWS]
                    if rows and rows + len(part) // 2 > MAX_APPEND_ROWS:
                        yield call_keys, body
                        call_keys, body, rows = [], [], 0
                    call_keys.append(key)
                    body.append(len(part) // 2)
                    body += part
                    rows += len(part) // 2
            if call_keys:
                yield call_keys, body

    def _by_slot(self, grouped: dict[str, list[Any]]) -> list[list[str]]:
        if not isinstance(self.client, RedisCluster):
            return [list(grouped)]
        slots: dict[int, list[str]] = {}
        for key in grouped:
            slots.setdefault(self.client.keyslot(key), []).append(key)
        return list(slots.values())

    def recent(
        self,
        view: str,
        entity: str,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int = 50,
        as_of: int | None = None,
        where: Filter | None = None,
        oldest_first: bool = False,
    ) -> list[Record]:
        """Distinct events newest first, each at its newest version visible at ``as_of``.

        One server-side script call, so one round trip whatever the number of versions.

        Args:
            view: Feature view (signal) name.
            entity: Entity tag (for users, the user id as text).
            since: Oldest event time to include, µs (inclusive).
            until: Newest event time to include, µs (inclusive).
            limit: Maximum number of distinct events.
            as_of: Processing time in µs: hide versions written after it.
            where: Only events whose (newest visible) version matches; evaluated in Redis.
            oldest_first: The oldest events of the range first instead of the newest.

        Raises:
            ScanLimitError: ``MAX_SCAN`` stored versions (``MAX_FILTER_SCAN`` with a filter)
                were scanned before the page filled.

        """
        if limit <= 0:
            return []
        args = _recent_args(since, until, limit, as_of, where, oldest_first)
        reply = self._run(self._recent_script, [self.key(view, entity)], args)
        return _recent_records(reply, limit, where is not None)

    def recent_with_versions(
        self,
        view: str,
        entity: str,
        *,
        since: int | None = None,
        until: int | None = None,
        limit: int = 50,
        as_of: int | None = None,
        where: Filter | None = None,
        oldest_first: bool = False,
    ) -> list[tuple[Record, int]]:
        """:meth:`recent`, each event with how many of its versions are visible at ``as_of``.

        The count comes from the same script call (the versions the read scans anyway, plus
        one event time's members when the page ends part-way through them); see
        :func:`usp_feast.versions.version_counts` for the rule. Same arguments and errors as
        :meth:`recent`.
        """
        if limit <= 0:
            return []
        args = _recent_args(since, until, limit, as_of, where, oldest_first)
        reply = self._run(self._recent_script, [self.key(view, entity)], args)
        return _counted_records(reply, limit, where is not None)

    def latest(
        self, view: str, entities: Sequence[str], *, since: int | None = None
    ) -> list[Record | None]:
        """The newest event (its newest version) per entity, in one pipelined round trip.

        Args:
            view: Feature view name.
            entities: Entity tags.
            since: Ignore events older than this (µs); how TTL is honoured at read time.

        """
        low = "-inf" if since is None else since
        with self.client.pipeline(transaction=False) as pipe:
            for entity in entities:
                pipe.zrevrangebyscore(self.key(view, entity), "+inf", low, start=0, num=1)
            replies = self._execute(pipe)
        return [decode_member(r[0]) if r else None for r in replies]

    def put_current(
        self, view: str, documents: Sequence[tuple[str, Mapping[str, Any], int]], *, now_ms: int
    ) -> None:
        """Replace entities' current state of a session view, each until it expires.

        This is state, not history: one small document per entity, overwritten, that Redis
        deletes by itself at its expiry (``PXAT``), so memory follows the active users.

        Args:
            view: Feature view name.
            documents: ``(entity, document, expires at in epoch ms)``, the document JSON-able
                (stored as JSON); the last per entity wins. One already expired at ``now_ms``
                is not written.
            now_ms: Processing time, epoch ms.

        """
        live = [(e, doc, until) for e, doc, until in documents if until > now_ms]
        if not live:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for entity, document, until in live:
                key = current_key(self.prefix, self.project, entity, view)
                pipe.set(key, orjson.dumps(document), pxat=until)
            self._execute(pipe)

    def current(self, view: str, entities: Sequence[str]) -> list[dict[str, Any] | None]:
        """Entities' current-state documents of a session view (None: none), in one round trip."""
        with self.client.pipeline(transaction=False) as pipe:
            for entity in entities:
                pipe.get(current_key(self.prefix, self.project, entity, view))
            replies = self._execute(pipe)
        return [None if reply is None else orjson.loads(reply) for reply in replies]

    def visible(
        self,
        view: str,
        ranges: Mapping[str, tuple[int, int]],
        *,
        as_of: int | None = None,
        chunk: int = 500,
    ) -> dict[str, dict[str, Record]]:
        """Per entity, its events in an event-time range, each at its newest visible version.

        What readers see, for bulk comparisons (backfill, reconcile): pipelined range reads,
        ``chunk`` entities per round trip, versions collapsed by :func:`collapse_versions`.

        Args:
            view: Feature view name.
            ranges: Entity → ``(since, until)`` event times in µs, both inclusive.
            as_of: Processing time in µs: hide versions written after it (None: now).
            chunk: Entities per round trip.

        Returns:
            Entity → event id → record; entities with no events are left out.
        """
        seen: dict[str, dict[str, Record]] = {}
        entities = list(ranges)
        for first in range(0, len(entities), chunk):
            part = entities[first : first + chunk]
            with self.client.pipeline(transaction=False) as pipe:
                for entity in part:
                    since, until = ranges[entity]
                    pipe.zrangebyscore(self.key(view, entity), since, until)
                replies = self._execute(pipe)
            for entity, members in zip(part, replies, strict=True):
                if members:
                    records = collapse_versions(map(decode_member, members), as_of)
                    seen[entity] = {record.event_id: record for record in records}
        return seen

    def entities(self, view: str) -> Iterator[str]:
        """Every entity holding records of ``view`` (a SCAN: for tools, not the serving path)."""
        head = len(f"{self.prefix}:{self.project}:{{")
        tail = len(f"}}:{view}")
        for key in self.client.scan_iter(
            match=view_pattern(self.prefix, self.project, view), count=1000
        ):
            text = key.decode() if isinstance(key, bytes) else key
            yield text[head : len(text) - tail]

    def versions(self, view: str, entity: str) -> list[Record]:
        """Every stored version of an entity's records, oldest event first (no collapsing)."""
        members = self._call(self.client.zrange, self.key(view, entity), 0, -1)
        return [decode_member(m) for m in members]

    def drop_view(self, view: str) -> int:
        """Delete every entity's records and current state of one view (removed from the repo)."""
        return self._unlink_matching(
            view_pattern(self.prefix, self.project, view)
        ) + self._unlink_matching(current_pattern(self.prefix, self.project, view))

    def drop_project(self) -> int:
        """Delete every key of this project (``feast teardown``)."""
        return self._unlink_matching(f"{self.prefix}:{self.project}:*")

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def _unlink_matching(self, pattern: str) -> int:
        removed = 0
        batch: list[Any] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                removed += self._unlink(batch)
                batch = []
        if batch:
            removed += self._unlink(batch)
        return removed

    def _unlink(self, keys: list[Any]) -> int:
        # One key per call: on Redis Cluster the keys of a batch span many slots.
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.unlink(key)
            return sum(self._execute(pipe))

    def _execute(self, pipe: Any) -> list[Any]:
        return self._call(pipe.execute)

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return self._call(script, keys=keys, args=args)

    def _run_per_master(self, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Script calls on a Redis Cluster, pipelined: one round trip per master they touch.

        A script's keys must share a hash slot, and the cluster client sends each call and waits
        for it, so a batch over many users (many slots) would wait once per slot. Each master's
        calls go down one pipeline on its connection instead. A call a pipeline did not complete
        (its slot moved, the master failed over, the script is not loaded there yet) is sent
        again through the cluster client, which follows redirects, refreshes its slot map and
        loads the script: appends are idempotent, so sending one twice is safe.
        """
        cluster = cast(RedisCluster, self.client)
        by_master: dict[str, list[int]] = {}
        for index, (keys, _) in enumerate(calls):
            by_master.setdefault(cluster.get_node_from_key(keys[0]).name, []).append(index)
        replies: list[Any] = [None] * len(calls)
        for name, indexes in by_master.items():
            try:
                with cluster.get_node(node_name=name).redis_connection.pipeline(
                    transaction=False
                ) as pipe:
                    for index in indexes:
                        keys, args = calls[index]
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    done = pipe.execute(raise_on_error=False)
            except redis.RedisError:
                continue
            for index, reply in zip(indexes, done, strict=True):
                replies[index] = None if isinstance(reply, Exception) else reply
        return [
            self._run(script, *calls[index]) if reply is None else reply
            for index, reply in enumerate(replies)
        ]

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailableError(
                redis_problem(exc)
                or f"Redis is not reachable ({exc}); check the online store's connection_string "
                "or start the local stack with `usp dev up`"
            ) from exc
