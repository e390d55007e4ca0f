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
    model_validator,
)

from usp_feast.aggregates import AggregateError, AggregateSpec
from usp_feast.durations import format_duration, parse_duration
from usp_feast.filters import FilterError, parse_filter
from usp_feast.limits import MAX_WINDOW
from usp_feast.segments import SegmentRules, SignalCondition

__all__ = [
    "FIELD_TYPES",
    "RESERVED_COLUMNS",
    "Duration",
    "FieldType",
    "QueryFeatureSpec",
    "SegmentSpec",
    "SignalConditionSpec",
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


def _parsed_filter(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_filter(value)
        except FilterError as exc:
            raise ValueError(str(exc)) from None
    return value


class SourceSpec(_Spec):
    """Where a signal's raw events come from."""

    topic: TopicName = Field(description="Kafka topic of the raw events")


class QueryFeatureSpec(_Spec):
    """A feature computed from the signal's history when it is requested (no job needed).

    Example:
        >>> QueryFeatureSpec(aggregate="count_distinct:city", within="1h").within.seconds
        3600
    """

    aggregate: str = Field(description="count, count_distinct:F, top_k:F:K, min/max/avg/sum:F")
    within: Duration = Field(description="window before the request, at most 7d")
    where: Annotated[str | None, AfterValidator(_parsed_filter)] = Field(
        None, description="optional filter, e.g. guests >= 2"
    )

    @field_validator("aggregate")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            AggregateSpec.parse(value)
        except AggregateError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("within")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= MAX_WINDOW:
            raise ValueError(f"must be longer than zero and at most {MAX_WINDOW.days}d")
        return value


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
    query_features: dict[Identifier, QueryFeatureSpec] = Field(
        default_factory=dict,
        description="features computed from history at request time (an on-demand view)",
    )

    @model_validator(mode="after")
    def _query_features_fit_fields(self) -> SignalSpec:
        types = {"event_id": "string", **self.fields}
        for name, feature in self.query_features.items():
            try:
                AggregateSpec.parse(feature.aggregate).check(types)
                if feature.where is not None:
                    parse_filter(feature.where).check(types)
            except (AggregateError, FilterError) as exc:
                raise ValueError(f"query_features.{name}: {exc}") from None
        return self

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
    def history_view(self) -> str:
        """Name of the on-demand feature view serving ``query_features``."""
        return f"{self.name}_history"

    @property
    def dead_letter_topic(self) -> str:
        """Kafka topic receiving events that fail validation."""
        return f"usp.dlq.{self.name}"


class SignalConditionSpec(_Spec):
    """A signal, optionally narrowed by a filter on its fields."""

    signal: Identifier = Field(description="name of a signal defined in signals/")
    where: Annotated[str | None, AfterValidator(_parsed_filter)] = Field(
        None, description="optional filter on the signal's fields, e.g. guests >= 2"
    )

    def condition(self) -> SignalCondition:
        """The pure-core form."""
        return SignalCondition(
            self.signal, None if self.where is None else parse_filter(self.where)
        )


class SegmentSpec(_Spec):
    """A live cohort: a trigger puts a user in, re-triggers extend, an exit or inactivity ends it.

    Example:
        >>> spec = SegmentSpec(
        ...     name="active_trip_planner", owner="growth-team",
        ...     trigger={"signal": "search"}, exit=[{"signal": "booking"}],
        ...     expires_after="14d")
        >>> spec.view, spec.topic
        ('segment_active_trip_planner', 'usp.segment.active_trip_planner')

    """

    name: Identifier
    description: str = ""
    owner: Annotated[str, StringConstraints(min_length=1)]
    trigger: SignalConditionSpec = Field(description="the signal event that puts a user in")
    expires_after: Duration = Field(description="inactivity expiry, reset by every re-trigger")
    start_delay: Duration = Field(timedelta(0), description="membership starts this much later")
    max_membership: Duration | None = Field(None, description="hard cap from entry")
    exit: list[SignalConditionSpec] = Field(
        default_factory=list, description="signal events that take a member out"
    )
    cooldown: Duration = Field(timedelta(0), description="no re-entry this long after leaving")
    retention: Duration = Field(
        timedelta(days=365), description="how long membership history is kept"
    )

    @field_validator("expires_after", "max_membership", "retention")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @field_validator("start_delay", "cooldown")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @model_validator(mode="after")
    def _delay_within_expiry(self) -> SegmentSpec:
        if self.start_delay >= self.expires_after:
            raise ValueError(
                f"start_delay ({format_duration(self.start_delay)}) must be shorter than "
                f"expires_after ({format_duration(self.expires_after)})"
            )
        return self

    def rules(self) -> SegmentRules:
        """The rules the pure core applies."""
        return SegmentRules(
            trigger=self.trigger.condition(),
            exits=tuple(e.condition() for e in self.exit),
            expires_after=self.expires_after,
            start_delay=self.start_delay,
            max_membership=self.max_membership,
            cooldown=self.cooldown,
        )

    @property
    def view(self) -> str:
        """Name of the Feast feature view serving the membership."""
        return f"segment_{self.name}"

    @property
    def push_source(self) -> str:
        """Name of the view's Feast push source."""
        return f"{self.view}_push"

    @property
    def topic(self) -> str:
        """Kafka topic of the membership changes."""
        return f"usp.segment.{self.name}"

    @property
    def late_topic(self) -> str:
        """Kafka topic of input applied late (behind the watermark) or set aside, with why."""
        return f"usp.late.segment.{self.name}"
