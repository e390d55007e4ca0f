"""Frozen pydantic models of the YAML definitions (the public spec of a signal)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
)

from usp_feast.durations import format_duration, parse_duration

__all__ = [
    "FIELD_TYPES",
    "RESERVED_COLUMNS",
    "Duration",
    "FieldType",
    "SignalSpec",
    "SourceSpec",
]


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"durations are strings like 10m or 14d, got {value!r}")
    return parse_duration(value)


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
TopicName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
ClassPath = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
]

FieldType = Literal["string", "int", "float", "bool", "timestamp"]
FIELD_TYPES: tuple[str, ...] = ("string", "int", "float", "bool", "timestamp")
# Columns every signal row carries; the platform adds them, definitions cannot redeclare them.
RESERVED_COLUMNS = ("user_id", "event_id", "event_ts")


def _not_reserved(name: str) -> str:
    if name in RESERVED_COLUMNS:
        raise ValueError(f"{name!r} is added to every signal row; remove it from fields")
    return name


# Checked per key (not on the whole mapping) so a reserved name is reported on its own line
# alongside any other problem in `fields`, instead of being hidden by it.
FieldName = Annotated[Identifier, AfterValidator(_not_reserved)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceSpec(_Spec):
    """Where a signal's raw events come from."""

    topic: TopicName = Field(description="Kafka topic of the raw events")


class SignalSpec(_Spec):
    """One signal: a typed, per-user stream of events kept append-only and versioned.

    Example:
        >>> spec = SignalSpec(
        ...     name="search", owner="search-team", source={"topic": "events.search"},
        ...     fields={"query": "string"}, transform="transforms.SearchTransform",
        ...     retention="30d", validation="search")
        >>> spec.retention.days
        30

    """

    name: Identifier
    description: str = ""
    owner: Annotated[str, StringConstraints(min_length=1)]
    source: SourceSpec
    entity_key: Identifier = Field("user_id", description="event field holding the user id")
    event_time: Identifier = Field("event_ts", description="event field holding event time")
    event_id: Identifier = Field("event_id", description="event field holding the event id")
    fields: dict[FieldName, FieldType] = Field(min_length=1)
    transform: ClassPath
    retention: Duration
    ttl: Duration | None = Field(None, description="online freshness; defaults to retention")
    validation: Identifier = Field(description="Great Expectations suite in validation/")

    @field_validator("retention", "ttl")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @property
    def online_ttl(self) -> timedelta:
        """How long the newest event is served online."""
        return self.ttl or self.retention

    @property
    def push_source(self) -> str:
        """Name of the signal's Feast push source."""
        return f"{self.name}_push"

    @property
    def signal_topic(self) -> str:
        """Kafka topic the signal is republished on for downstream jobs."""
        return f"usp.signal.{self.name}"

    @property
    def dead_letter_topic(self) -> str:
        """Kafka topic receiving events that fail validation."""
        return f"usp.dlq.{self.name}"
