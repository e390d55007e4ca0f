r"""The versioned record format and the pure version-collapse rules.

A stored record is one Redis sorted-set member, scored by its event time in microseconds::

    <version: 16 decimal digits, µs of processing time><event id>\x1f<JSON body>

The fixed-width version prefix makes Redis order members that share an event time newest
version first, so "latest event, newest version" is a single ``ZRANGE ... REV LIMIT 0 1``;
and the event id sits before a separator so the server-side reader can collapse versions
without parsing JSON. Nothing here talks to Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = [
    "ID_SEPARATOR",
    "VERSION_WIDTH",
    "Record",
    "collapse_versions",
    "decode_member",
    "duration_micros",
    "encode_member",
    "from_micros",
    "iso_micros",
    "to_micros",
    "version_counts",
]

VERSION_WIDTH = 16
ID_SEPARATOR = b"\x1f"


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch of a datetime; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Integer arithmetic: float timestamps lose microseconds for present-day dates.
    return duration_micros(moment - _EPOCH)


def duration_micros(value: timedelta) -> int:
    """Whole microseconds of a duration."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime of a microsecond epoch timestamp."""
    return _EPOCH + timedelta(microseconds=micros)


def iso_micros(micros: int) -> str:
    """ISO-8601 UTC text (``...T17:00:00.123000Z``) of a microsecond epoch timestamp.

    Example:
        >>> iso_micros(1_795_712_400_123_000)
        '2026-11-26T17:00:00.123000Z'
    """
    seconds, fraction = divmod(micros, 1_000_000)
    # gmtime + strftime is several times cheaper than building a datetime, on the read path.
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{fraction:06d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """One version of one event of one entity.

    Attributes:
        event_id: Identity of the event; versions of the same event share it.
        event_ts: Event time, microseconds since the epoch.
        version: Processing time at which this version was written, microseconds.
        fields: The event's values (JSON-compatible).

    """

    event_id: str
    event_ts: int
    version: int
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def event_time(self) -> datetime:
        """Event time as a UTC datetime."""
        return from_micros(self.event_ts)

    @property
    def processed_at(self) -> datetime:
        """Processing time of this version as a UTC datetime."""
        return from_micros(self.version)


def encode_member(record: Record) -> bytes:
    """Serialize a record into its sorted-set member."""
    if not 0 <= record.version < 10**VERSION_WIDTH:
        raise ValueError(f"version {record.version} does not fit {VERSION_WIDTH} digits")
    event_id = record.event_id.encode()
    if ID_SEPARATOR in event_id:
        raise ValueError(f"event id {record.event_id!r} contains the reserved byte 0x1f")
    body = orjson.dumps({"ts": record.event_ts, "f": record.fields})
    return b"%016d%s\x1f%s" % (record.version, event_id, body)


def decode_member(member: bytes) -> Record:
    """Parse a sorted-set member back into a record."""
    separator = member.index(ID_SEPARATOR, VERSION_WIDTH)
    body = orjson.loads(member[separator + 1 :])
    return Record(
        event_id=member[VERSION_WIDTH:separator].decode(),
        event_ts=body["ts"],
        version=int(member[:VERSION_WIDTH]),
        fields=body["f"],
    )


def collapse_versions(records: Iterable[Record], as_of: int | None = None) -> Iterator[Record]:
    """Collapse versions per event id: newest version known at ``as_of`` wins.

    This is the reference for what readers see; the Redis-side reader (``recent.lua``)
    implements the same rule in one round trip and is tested against it.

    Args:
        records: Records in any order.
        as_of: Processing time in µs; versions written after it are invisible. None: now.

    Yields:
        One record per event id, newest event time first (ties: newest version, then id).

    """
    newest: dict[str, Record] = {}
    for record in records:
        if as_of is not None and record.version > as_of:
            continue
        kept = newest.get(record.event_id)
        if kept is None or record.version > kept.version:
            newest[record.event_id] = record
    # Same order as Redis gives members of equal score: version, then event id, descending.
    yield from sorted(
        newest.values(), key=lambda r: (r.event_ts, r.version, r.event_id), reverse=True
    )


def version_counts(records: Iterable[Record], as_of: int | None = None) -> dict[str, int]:
    """How many versions of each event id are visible at ``as_of``: what readers report.

    The reference for the count ``recent.lua`` returns beside each event (replays and
    corrections each add one; an identical member written twice is one member in Redis, so it
    counts once).

    Example:
        >>> stored = [Record("e1", 10, 100), Record("e1", 10, 500), Record("e2", 20, 100)]
        >>> version_counts(stored)
        {'e1': 2, 'e2': 1}
        >>> version_counts(stored, as_of=200)
        {'e1': 1, 'e2': 1}

    """
    versions: dict[str, set[int]] = {}
    for record in records:
        if as_of is None or record.version <= as_of:
            versions.setdefault(record.event_id, set()).add(record.version)
    return {event_id: len(seen) for event_id, seen in versions.items()}
