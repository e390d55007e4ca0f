"""What a signal job does to one Kafka record, as a pure function of its bytes.

Validate against the contract, transform, and return either a signal row or a dead letter.
The Flink operator (:mod:`usp_feast.flink`) only moves records in and out of this; tests and
the backfill call it directly, so every path agrees on what is valid and what a row is.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import orjson

from usp_feast.contracts import Contract, Violation
from usp_feast.pipeline import RejectedEvent
from usp_feast.versions import to_micros

__all__ = [
    "Accepted",
    "BatchOutcome",
    "DeadLetter",
    "EventPipeline",
    "SignalProcessor",
    "SourcePosition",
    "event_time_ms",
    "row_to_json",
]


@dataclass(frozen=True)
class SourcePosition:
    """Where a record came from: enough to find the original again."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


Row = TypeVar("Row")
Row_co = TypeVar("Row_co", covariant=True)


class EventPipeline(Protocol[Row_co]):
    """What turns a valid event into a row: a signal's pipeline, or one input of a join."""

    @property
    def name(self) -> str:
        """Whose events these are (dead letters say it)."""
        ...

    def process(self, event: Any) -> Row_co | None:
        """The row of a valid event, None to drop it; raises ``RejectedEvent`` to reject it."""
        ...


@dataclass(frozen=True)
class Accepted(Generic[Row]):
    """A valid event turned into a row (a signal row, or a join input's record)."""

    row: Row


@dataclass(frozen=True)
class DeadLetter:
    """A rejected record with the original bytes, the reasons and the source position."""

    signal: str
    position: SourcePosition
    reasons: tuple[Violation, ...]
    original: bytes

    def to_json(self) -> bytes:
        """The dead-letter topic's record value."""
        return orjson.dumps(
            {
                "signal": self.signal,
                "source": {
                    "topic": self.position.topic,
                    "partition": self.position.partition,
                    "offset": self.position.offset,
                    "timestamp_ms": self.position.timestamp_ms,
                },
                "reasons": [
                    {"expectation": v.expectation, "column": v.column, "message": v.message}
                    for v in self.reasons
                ],
                "original_base64": base64.b64encode(self.original).decode(),
                "rejected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )


@dataclass(frozen=True)
class BatchOutcome(Generic[Row]):
    """What a batch of records became, each kept in arrival order."""

    rows: list[Row]
    dead_letters: list[DeadLetter]


def event_time_ms(row: dict[str, Any]) -> int:
    """A signal row's event time in epoch milliseconds (its record timestamp on Kafka)."""
    return to_micros(row["event_ts"]) // 1000


def row_to_json(row: dict[str, Any]) -> bytes:
    """A signal row as published on ``usp.signal.<name>`` (event time as ISO-8601 UTC)."""
    return orjson.dumps(row, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)


class SignalProcessor(Generic[Row]):
    """Validate + transform for one signal (or one input of a join signal).

    Example:
        >>> processor = SignalProcessor(pipeline, contract)
        >>> outcome = processor.process(b'{"not": "an event"}', SourcePosition("t", 0, 7))
        >>> isinstance(outcome, DeadLetter), outcome.position.offset
        (True, 7)
    """

    def __init__(
        self, pipeline: EventPipeline[Row], contract: Contract, max_bytes: int = 64 * 1024
    ) -> None:
        self.pipeline = pipeline
        self.contract = contract
        self.max_bytes = max_bytes
        self.signal = pipeline.name

    def process(self, raw: bytes, position: SourcePosition) -> Accepted[Row] | DeadLetter | None:
        """The outcome for one record; None when the transform drops a valid event."""
        event, violations = self.contract.check_bytes(raw, max_bytes=self.max_bytes)
        if violations or event is None:
            return DeadLetter(self.signal, position, tuple(violations), raw)
        try:
            row = self.pipeline.process(event)
        except RejectedEvent as exc:
            reason = Violation(expectation="transform", column=None, message=exc.reason)
            return DeadLetter(self.signal, position, (reason,), raw)
        return None if row is None else Accepted(row)

    def process_batch(self, records: Iterable[tuple[bytes, SourcePosition]]) -> BatchOutcome[Row]:
        """Each record processed on its own (as :meth:`process`), outcomes split by kind."""
        rows: list[Row] = []
        dead_letters: list[DeadLetter] = []
        for raw, position in records:
            outcome = self.process(raw, position)
            if isinstance(outcome, Accepted):
                rows.append(outcome.row)
            elif outcome is not None:
                dead_letters.append(outcome)
        return BatchOutcome(rows, dead_letters)
