"""Frozen pydantic models of the YAML definitions (the public spec of a signal)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from usp_feast.aggregates import AggregateError, AggregateSpec
from usp_feast.durations import format_duration, parse_duration
from usp_feast.filters import FilterError, parse_filter
from usp_feast.joins import JoinRules
from usp_feast.limits import MAX_WINDOW
from usp_feast.segments import SegmentRules, SignalCondition
from usp_feast.sessions import SessionSpec
from usp_feast.windows import SlidingWindowSpec

__all__ = [
    "ENGAGEMENT_COLUMNS",
    "FIELD_TYPES",
    "RESERVED_COLUMNS",
    "RIGHT_EVENT_TS",
    "Duration",
    "FieldType",
    "IntervalSpec",
    "JoinSideSpec",
    "JoinSignalSpec",
    "MissingRightSpec",
    "QueryFeatureSpec",
    "SegmentSpec",
    "SessionEngagementSpec",
    "SessionWindowModel",
    "SignalConditionSpec",
    "SignalDefinition",
    "SignalSpec",
    "SlidingWindowModel",
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


def _check_query_features(
    query_features: dict[str, QueryFeatureSpec], fields: dict[str, str]
) -> None:
    types = {"event_id": "string", **fields}
    for name, feature in query_features.items():
        try:
            AggregateSpec.parse(feature.aggregate).check(types)
            if feature.where is not None:
                parse_filter(feature.where).check(types)
        except (AggregateError, FilterError) as exc:
            raise ValueError(f"query_features.{name}: {exc}") from None


def _positive(value: timedelta | None) -> timedelta | None:
    if value is not None and value <= timedelta(0):
        raise ValueError("must be longer than zero")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
NonNegativeDuration = Annotated[Duration, AfterValidator(_not_negative)]


class _SignalOutput(_Spec):
    """What every definition that produces signal rows has: rows of a user, kept versioned.

    Plain signals (:class:`SignalSpec`) and join signals (:class:`JoinSignalSpec`) compile to
    the same Feast objects and are read the same way; only how their rows are made differs.
    """

    name: Identifier
    description: str = ""
    owner: Annotated[str, StringConstraints(min_length=1)]
    retention: PositiveDuration
    ttl: PositiveDuration | None = Field(
        None, description="online freshness; defaults to retention"
    )
    query_features: dict[Identifier, QueryFeatureSpec] = Field(
        default_factory=dict,
        description="features computed from history at request time (an on-demand view)",
    )

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


class SignalSpec(_SignalOutput):
    """One signal: a typed, per-user stream of events kept append-only and versioned.

    Example:
        >>> spec = SignalSpec(
        ...     name="search", owner="search-team", source={"topic": "events.search"},
        ...     fields={"query": "string"}, transform="transforms.SearchTransform",
        ...     retention="30d", validation="search")
        >>> spec.retention.days
        30

    """

    source: SourceSpec
    entity_key: Identifier = Field("user_id", description="event field holding the user id")
    event_time: Identifier = Field("event_ts", description="event field holding event time")
    event_id: Identifier = Field("event_id", description="event field holding the event id")
    fields: dict[FieldName, FieldType] = Field(min_length=1)
    transform: ClassPath
    validation: Identifier = Field(description="Great Expectations suite in validation/")

    @model_validator(mode="after")
    def _query_features_fit_fields(self) -> SignalSpec:
        _check_query_features(self.query_features, dict(self.fields))
        return self

    @property
    def topics_read(self) -> tuple[str, ...]:
        """The raw topics the signal's job reads."""
        return (self.source.topic,)


# The matched right record's event time, in every join signal row (null when none matched).
RIGHT_EVENT_TS = "right_event_ts"


def _not_join_column(name: str) -> str:
    if name == RIGHT_EVENT_TS:
        raise ValueError(f"{name!r} is added to every join signal row; rename the field")
    return name


JoinFieldName = Annotated[FieldName, AfterValidator(_not_join_column)]


class JoinSideSpec(_Spec):
    """One input of a join: a raw topic, its contract, its join key and the fields it gives."""

    topic: TopicName = Field(description="Kafka topic of the raw events")
    validation: Identifier = Field(description="Great Expectations suite in validation/")
    key: Identifier = Field(description="event field holding the join key")
    fields: dict[JoinFieldName, FieldType] = Field(
        default_factory=dict, description="fields this side adds to the joined row"
    )
    event_time: Identifier = Field("event_ts", description="event field holding event time")
    event_id: Identifier = Field("event_id", description="event field holding the event id")


class IntervalSpec(_Spec):
    """How far a right record's time may lie before and after the left event's."""

    before: NonNegativeDuration = timedelta(0)
    after: NonNegativeDuration = timedelta(0)


class MissingRightSpec(_Spec):
    """What happens to a left event no right record matches."""

    wait: NonNegativeDuration = Field(
        default=timedelta(0), description="event time to wait for a right record after the left"
    )
    then: Literal["emit_nulls", "drop"] = Field(
        default="emit_nulls", description="emit the left event with null right fields, or drop it"
    )


class JoinSignalSpec(_SignalOutput):
    """A signal made by joining two event streams on a shared key (a stream-stream join).

    ``how: latest`` enriches each left event with the newest right record of its key as of the
    left event's time; ``how: interval`` pairs it with every right record within ``within``.

    Example:
        >>> spec = JoinSignalSpec(
        ...     name="wishlist_enriched", owner="discovery-team",
        ...     left={"topic": "events.wishlist_add", "validation": "wishlist_add",
        ...           "key": "listing_id", "fields": {"listing_id": "int"}},
        ...     right={"topic": "events.listing_update", "validation": "listing_update",
        ...            "key": "listing_id", "fields": {"price": "float"}},
        ...     state_ttl="30d", retention="90d")
        >>> spec.fields
        {'listing_id': 'int', 'price': 'float', 'right_event_ts': 'string'}
        >>> spec.describe()
        'events.wishlist_add joined on listing_id with the latest events.listing_update'

    """

    left: JoinSideSpec = Field(description="the events being enriched; they carry the user")
    right: JoinSideSpec = Field(description="the records joined to them")
    how: Literal["latest", "interval"] = Field(
        "latest", description="latest: newest right record as of the left event; interval"
    )
    within: IntervalSpec | None = Field(None, description="interval joins: the time bound")
    user_key: Identifier = Field("user_id", description="left event field holding the user id")
    out_of_orderness: NonNegativeDuration = Field(
        timedelta(seconds=5),
        description="how far out of event-time order input may arrive and still join",
    )
    state_ttl: PositiveDuration = Field(description="how long a right record can enrich")
    missing_right: MissingRightSpec = Field(
        MissingRightSpec(), description="what happens to a left event nothing matches"
    )

    @model_validator(mode="after")
    def _consistent(self) -> JoinSignalSpec:
        if self.left.topic == self.right.topic:
            raise ValueError(
                f"left and right read the same topic {self.left.topic!r}; a join needs two"
            )
        clash = sorted(set(self.left.fields) & set(self.right.fields))
        if clash:
            raise ValueError(
                f"{', '.join(map(repr, clash))} is in both left.fields and right.fields; "
                "a joined row has one column per name, so keep it on one side"
            )
        if not self.left.fields and not self.right.fields:
            raise ValueError("list the fields of the joined row in left.fields or right.fields")
        if self.how == "interval" and self.within is None:
            raise ValueError("how: interval needs within: {before: ..., after: ...}")
        if self.how == "latest" and self.within is not None:
            raise ValueError("within applies to how: interval only; remove it or set how")
        if self.how == "interval" and self.missing_right.wait:
            raise ValueError(
                "missing_right.wait applies to how: latest; an interval join waits for its "
                "within.after"
            )
        self.rules()  # the core's own checks (e.g. state_ttl shorter than within.before)
        _check_query_features(self.query_features, self.fields)
        return self

    @property
    def fields(self) -> dict[str, str]:
        """The joined row's fields and types (besides user_id, event_id and event_ts)."""
        return {**self.left.fields, **self.right.fields, RIGHT_EVENT_TS: "string"}

    @property
    def topics_read(self) -> tuple[str, ...]:
        """The raw topics the join's job reads."""
        return (self.left.topic, self.right.topic)

    @property
    def late_topic(self) -> str:
        """Kafka topic of input too late to be joined, with why."""
        return f"usp.late.join.{self.name}"

    def rules(self) -> JoinRules:
        """The rules the pure core applies.

        Raises:
            ValueError: When the durations do not fit together (the core says why).

        """
        within = self.within or IntervalSpec()
        return JoinRules(
            how=self.how,
            state_ttl_ms=_ms(self.state_ttl),
            wait_ms=_ms(self.missing_right.wait),
            before_ms=_ms(within.before),
            after_ms=_ms(within.after),
            emit_missing=self.missing_right.then == "emit_nulls",
        )

    def describe(self) -> str:
        """One line saying what is joined with what."""
        if self.how == "latest":
            return f"{self.left.topic} joined on {self.left.key} with the latest {self.right.topic}"
        within = self.within or IntervalSpec()
        return (
            f"{self.left.topic} joined on {self.left.key} with every {self.right.topic} from "
            f"{format_duration(within.before)} before to {format_duration(within.after)} after"
        )


SignalDefinition = SignalSpec | JoinSignalSpec
"""A definition whose job makes signal rows: from one topic, or by joining two."""


def _ms(value: timedelta) -> int:
    return value // timedelta(milliseconds=1)


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


# Columns of every session engagement row (the key, the event and the engagement's own times);
# a feature cannot take one of these names.
ENGAGEMENT_COLUMNS = (
    "user_id",
    "event_id",
    "event_ts",
    "started_at",
    "last_event_at",
    "expires_at",
    "closed",
)


def _not_engagement_column(name: str) -> str:
    if name in ENGAGEMENT_COLUMNS:
        raise ValueError(
            f"{name!r} is a column of every session engagement row; rename the feature"
        )
    return name


def _parsed_aggregate(value: str) -> str:
    try:
        AggregateSpec.parse(value)
    except AggregateError as exc:
        raise ValueError(str(exc)) from None
    return value


# Checked per key and per value, so each bad feature is reported on its own line.
EngagementFeatureName = Annotated[Identifier, AfterValidator(_not_engagement_column)]
AggregateText = Annotated[str, AfterValidator(_parsed_aggregate)]


class SessionWindowModel(_Spec):
    """A visit: events closer than ``gap`` share a session, optionally capped in length."""

    gap: Duration = Field(description="the silence that ends a session, e.g. 30m")
    max_length: Duration | None = Field(None, description="optional cap on a session's span")

    @field_validator("gap", "max_length")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value


class SlidingWindowModel(_Spec):
    """Windows of ``size`` starting every ``step`` (``step == size``: tumbling windows)."""

    size: Duration = Field(description="length of each window, a whole multiple of step")
    step: Duration = Field(description="time between window starts")

    @model_validator(mode="after")
    def _fits(self) -> SlidingWindowModel:
        SlidingWindowSpec(size=self.size, step=self.step)  # its ValueError names the fix
        return self


class SessionEngagementSpec(_Spec):
    """Per-user aggregates over a visit (``session``) or a sliding ``window`` of signal events.

    Example:
        >>> spec = SessionEngagementSpec(
        ...     name="browse_session", owner="discovery-team", signals=["search", "view"],
        ...     session={"gap": "30m", "max_length": "4h"},
        ...     features={"events": "count", "top_cities": "top_k:city:3"})
        >>> spec.kind, spec.view, spec.topic
        ('session', 'browse_session', 'usp.session.browse_session')
        >>> spec.describe()
        'session: 30m gap, at most 4h, over search, view'
        >>> spec.aggregates()["top_cities"]
        AggregateSpec(kind='top_k', field='city', k=3)
        >>> SessionEngagementSpec(
        ...     name="views_10m", owner="discovery-team", signals=["view"],
        ...     window={"size": "10m", "step": "5m"}, features={"count": "count"}).describe()
        '10m window every 5m over view'

    """

    name: Identifier
    description: str = ""
    owner: Annotated[str, StringConstraints(min_length=1)]
    signals: list[Identifier] = Field(min_length=1, description="the signals aggregated")
    session: SessionWindowModel | None = Field(
        None, description="sessions: a visit ends after a gap without events"
    )
    # Validated even when absent, so "neither session nor window" is reported.
    window: SlidingWindowModel | None = Field(
        None, validate_default=True, description="sliding windows of size, every step"
    )
    allowed_lateness: Duration = Field(
        timedelta(0), description="how long after its end late events still update a result"
    )
    features: dict[EngagementFeatureName, AggregateText] = Field(
        min_length=1, description="feature name -> aggregate, e.g. top_k:city:3"
    )
    retention: Duration = Field(
        timedelta(days=90), description="how long closed summaries are kept in history"
    )

    @field_validator("signals")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        repeated = sorted({name for name in value if value.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once")
        return value

    @field_validator("window")
    @classmethod
    def _session_or_window(
        cls, value: SlidingWindowModel | None, info: ValidationInfo
    ) -> SlidingWindowModel | None:
        if "session" not in info.data:  # the session block is invalid: reported on its own
            return value
        if info.data["session"] is not None and value is not None:
            raise ValueError("set either session or window, not both")
        if info.data["session"] is None and value is None:
            raise ValueError(
                "set one of session (visits ending after a gap, e.g. session: {gap: 30m}) "
                "or window (sliding windows, e.g. window: {size: 10m, step: 5m})"
            )
        return value

    @field_validator("retention")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than zero")
        return value

    @field_validator("allowed_lateness")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @property
    def kind(self) -> Literal["session", "window"]:
        """``session`` (gap-based visits) or ``window`` (sliding windows)."""
        return "session" if self.session is not None else "window"

    def aggregates(self) -> dict[str, AggregateSpec]:
        """Feature name → parsed aggregate, in definition order."""
        return {name: AggregateSpec.parse(text) for name, text in self.features.items()}

    def session_spec(self) -> SessionSpec:
        """The pure-core form of a ``session`` engagement.

        Raises:
            ValueError: When the engagement is a sliding ``window``.

        """
        if self.session is None:
            raise ValueError(f"{self.name} is a sliding window, not a session; use window_spec()")
        return SessionSpec(gap=self.session.gap, max_length=self.session.max_length)

    def window_spec(self) -> SlidingWindowSpec:
        """The pure-core form of a ``window`` engagement.

        Raises:
            ValueError: When the engagement is a ``session``.

        """
        if self.window is None:
            raise ValueError(f"{self.name} is a session, not a sliding window; use session_spec()")
        return SlidingWindowSpec(
            size=self.window.size, step=self.window.step, allowed_lateness=self.allowed_lateness
        )

    def describe(self) -> str:
        """One line saying what the engagement aggregates over."""
        over = ", ".join(self.signals)
        if self.session is not None:
            cap = self.session.max_length
            at_most = f", at most {format_duration(cap)}" if cap is not None else ""
            return f"session: {format_duration(self.session.gap)} gap{at_most}, over {over}"
        window = cast(SlidingWindowModel, self.window)
        return (
            f"{format_duration(window.size)} window every {format_duration(window.step)} "
            f"over {over}"
        )

    @property
    def view(self) -> str:
        """Name of the Feast feature view serving the features (the engagement's own name)."""
        return self.name

    @property
    def push_source(self) -> str:
        """Name of the view's Feast push source."""
        return f"{self.name}_push"

    @property
    def topic(self) -> str:
        """Kafka topic of the engagement's summaries."""
        return f"usp.session.{self.name}"

    @property
    def late_topic(self) -> str:
        """Kafka topic of input that arrived too late to be applied, with why."""
        return f"usp.late.session.{self.name}"
