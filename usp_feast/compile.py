"""Compile definitions into Feast objects (pure: no I/O beyond reading the definitions).

Per signal ``search``: a Parquet ``FileSource`` ``search_source``, a ``PushSource``
``search_push`` backed by it, and a ``StreamFeatureView`` ``search`` whose rows are the
signal's events, all keyed by the shared ``user`` entity. Per segment ``active_trip_planner``:
the same three objects named ``segment_active_trip_planner*``, whose rows are membership changes.
Per session engagement ``browse_session``: the same three named ``browse_session*``, whose rows
are the engagement's features for a session or window, so users read ``browse_session:events``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from feast import Entity, Field, FileSource, PushSource, StreamFeatureView, ValueType
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.types import Array, Bool, FeastType, Float64, Int64, String, UnixTimestamp

from usp_feast.aggregates import AggregateSpec
from usp_feast.definitions import Definitions, load_definitions
from usp_feast.durations import format_duration
from usp_feast.online_store import RETENTION_TAG
from usp_feast.query_features import StoreAddress, history_function, history_source
from usp_feast.spec import JoinSignalSpec, SegmentSpec, SessionEngagementSpec, SignalDefinition

# Feast warns that every StreamFeatureView is alpha, on each construction and registry load,
# and its own import resets filters to show it; it says nothing about a user's definitions.
warnings.filterwarnings(
    "ignore", message="Stream feature views are experimental", category=RuntimeWarning
)

__all__ = [
    "ENGAGEMENT_FIELDS",
    "USER",
    "FeastObjects",
    "compile_definitions",
    "history_view",
    "repo_objects",
    "segment_view",
    "session_view",
    "signal_view",
    "store_address",
]

USER = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user of the product; every signal is keyed by it.",
)

FEAST_TYPES: dict[str, FeastType] = {
    "string": String,
    "int": Int64,
    "float": Float64,
    "bool": Bool,
    "timestamp": UnixTimestamp,
}


@dataclass(frozen=True)
class FeastObjects:
    """Everything ``feast apply`` registers for a set of definitions."""

    entities: tuple[Entity, ...]
    sources: tuple[Any, ...]
    views: tuple[StreamFeatureView, ...]
    on_demand_views: tuple[OnDemandFeatureView, ...] = ()

    def by_name(self) -> dict[str, Any]:
        """Objects keyed by their Feast name, for a repository module's globals."""
        named: dict[str, Any] = {}
        for obj in (*self.entities, *self.sources, *self.views, *self.on_demand_views):
            named[obj.name] = obj
        return named


class SignalView(StreamFeatureView):
    """A StreamFeatureView whose registry copy equals the object it was applied from.

    Stock ``StreamFeatureView`` serializes its schema from a ``set`` (order changes with the
    interpreter's hash seed) and moves inferred entity columns into its features, so the
    copy in the registry never equals a freshly imported view and every ``feast plan``
    reports an update. Sorting the schema, and building the view in the shape inference and a
    proto round trip give it, keeps a second ``feast plan``/``feast apply`` a no-op.
    """

    # The base class stores the schema; here it is derived (sorted), hence the ignore.
    @property
    def schema(self) -> list[Field]:  # type: ignore[override]
        """Entity columns and features, deduplicated and sorted by name."""
        return sorted(set(self.entity_columns + self.features), key=lambda f: f.name)

    def __copy__(self) -> SignalView:
        # The registry diffs a copy; the base class would return a plain StreamFeatureView.
        copied = super().__copy__()
        copied.__class__ = SignalView
        return copied


def signal_view(spec: SignalDefinition) -> tuple[Any, Any, SignalView]:
    """The Feast objects of one signal (or join signal): its file source, push source and view."""
    offline = FileSource(
        name=f"{spec.name}_source",
        path=f"data/signals/{spec.name}",
        timestamp_field="event_ts",
        # Rows are versions (column created_ts); the offline store reads each event's newest
        # (usp_feast.offline_store). Not declared here: Feast would demand it in every push.
        description=f"Offline rows of signal {spec.name}: one per version, the newest is read",
    )
    schema = [Field(name="event_id", dtype=String)] + [
        Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in spec.fields.items()
    ]
    view = SignalView(
        name=spec.name,
        source=PushSource(name=spec.push_source, batch_source=offline),
        entities=[USER],
        ttl=spec.online_ttl,
        schema=schema,
        timestamp_field="event_ts",
        online=True,
        description=spec.description,
        owner=spec.owner,
        tags={
            **_source_tags(spec),
            RETENTION_TAG: format_duration(spec.retention),
        },
    )
    # The shape `feast apply` inference and the registry's proto round trip give it.
    view.entity_columns = [Field(name="user_id", dtype=Int64)]
    view = SignalView.from_proto(view.to_proto())
    return view.batch_source, view.stream_source, view


def _source_tags(spec: SignalDefinition) -> dict[str, str]:
    if isinstance(spec, JoinSignalSpec):
        return {
            "usp.kind": "join",
            "usp.topic": spec.left.topic,
            "usp.right_topic": spec.right.topic,
            "usp.join": spec.describe(),
        }
    return {"usp.kind": "signal", "usp.topic": spec.source.topic}


# The membership a segment view serves; ``in_segment`` is re-checked against ``expires_at`` when
# read (usp_feast.online_store), so an expired member is never served as one.
SEGMENT_FEATURES: tuple[tuple[str, FeastType], ...] = (
    ("in_segment", Bool),
    ("entered_at", UnixTimestamp),
    ("expires_at", UnixTimestamp),
    ("change", String),
    ("reason", String),
)


def segment_view(spec: SegmentSpec) -> tuple[Any, Any, SignalView]:
    """The Feast objects of one segment: file source, push source and membership view.

    The view has no TTL: how long a membership lasts is the segment's rule, applied at read
    time from ``expires_at``.
    """
    return _derived_view(
        spec.view,
        spec.push_source,
        FileSource(
            name=f"{spec.view}_source",
            path=f"data/segments/{spec.name}",
            timestamp_field="event_ts",
            description=f"Membership changes of segment {spec.name}",
        ),
        [Field(name=name, dtype=dtype) for name, dtype in SEGMENT_FEATURES],
        description=spec.description or spec.rules().describe(),
        owner=spec.owner,
        tags={"usp.kind": "segment", "usp.segment": spec.name, "usp.topic": spec.topic},
        retention=spec.retention,
    )


def _derived_view(
    name: str,
    push_source: str,
    offline: FileSource,
    features: list[Field],
    *,
    description: str,
    owner: str,
    tags: dict[str, str],
    retention: timedelta,
) -> tuple[Any, Any, SignalView]:
    """A view a job derives from signals (segments, sessions).

    Keyed by user, no TTL (its own expiry rule is applied at read time), records named by
    ``event_id``.
    """
    view = SignalView(
        name=name,
        source=PushSource(name=push_source, batch_source=offline),
        entities=[USER],
        ttl=timedelta(0),
        schema=[Field(name="event_id", dtype=String), *features],
        timestamp_field="event_ts",
        online=True,
        description=description,
        owner=owner,
        tags={**tags, RETENTION_TAG: format_duration(retention)},
    )
    view.entity_columns = [Field(name="user_id", dtype=Int64)]
    view = SignalView.from_proto(view.to_proto())
    return view.batch_source, view.stream_source, view


def _feature_type(aggregate: AggregateSpec, field_type: str | None) -> FeastType:
    if aggregate.kind in ("count", "count_distinct"):
        return Int64
    if aggregate.kind in ("top_k", "last_k"):
        return Array(FEAST_TYPES[field_type or "string"])
    if aggregate.kind in ("first_ts", "last_ts"):
        return String  # ISO-8601 text, as the query API returns it
    if aggregate.kind in ("avg", "duration") or field_type == "float":
        return Float64
    return Int64


# Columns of a session engagement row after its features: when it started, its latest event,
# when it ends unless extended (gap or window end) and whether it is final.
ENGAGEMENT_FIELDS = ("started_at", "last_event_at", "expires_at", "closed")
_ENGAGEMENT_TYPES: dict[str, FeastType] = {
    "started_at": UnixTimestamp,
    "last_event_at": UnixTimestamp,
    "expires_at": UnixTimestamp,
    "closed": Bool,
}


def session_view(
    spec: SessionEngagementSpec, definitions: Definitions
) -> tuple[Any, Any, SignalView]:
    """The Feast objects of one session engagement: file source, push source and view.

    The view is named like the engagement and has no TTL: how long a session or window counts
    is its own rule, carried in ``expires_at``. A feature's type follows its aggregate and the
    field's type in the first listed signal that has the field.
    """
    offline = FileSource(
        name=f"{spec.name}_source",
        path=f"data/sessions/{spec.name}",
        timestamp_field="event_ts",
        description=f"Summaries of session engagement {spec.name}",
    )
    signals = [definitions.signal(name) for name in spec.signals]
    features = []
    for name, aggregate in spec.aggregates().items():
        field = aggregate.field or ""
        field_type = next((s.fields[field] for s in signals if field in s.fields), None)
        features.append(Field(name=name, dtype=_feature_type(aggregate, field_type)))
    return _derived_view(
        spec.view,
        spec.push_source,
        offline,
        features + [Field(name=name, dtype=_ENGAGEMENT_TYPES[name]) for name in ENGAGEMENT_FIELDS],
        description=spec.description or spec.describe(),
        owner=spec.owner,
        tags={
            "usp.kind": "session",
            "usp.window": spec.kind,
            "usp.session": spec.name,
            "usp.topic": spec.topic,
        },
        retention=spec.retention,
    )


def history_view(
    spec: SignalDefinition, view: StreamFeatureView, address: StoreAddress
) -> OnDemandFeatureView:
    """The on-demand feature view serving a signal's ``query_features`` from its history.

    Its source is the signal's own view (``event_id`` only), which brings the requested users'
    ``user_id`` to the function; see :mod:`usp_feast.query_features`.
    """
    schema = []
    for name, feature in sorted(spec.query_features.items()):
        aggregate = AggregateSpec.parse(feature.aggregate)
        field_type = spec.fields.get(aggregate.field or "")
        schema.append(Field(name=name, dtype=_feature_type(aggregate, field_type)))
    described = ", ".join(
        f"{name} = {f.aggregate} within {format_duration(f.within)}"
        + (f" where {f.where}" if f.where else "")
        for name, f in sorted(spec.query_features.items())
    )
    return OnDemandFeatureView(
        name=spec.history_view,
        sources=[view[["event_id"]]],
        schema=schema,
        feature_transformation=None,
        udf=history_function(spec, address),
        udf_string=history_source(spec, address),
        mode="python",
        description=f"Computed from {spec.name}'s history at request time: {described}",
        owner=spec.owner,
        tags={"usp.kind": "query_features", "usp.signal": spec.name},
    )


def compile_definitions(
    definitions: Definitions, address: StoreAddress | None = None
) -> FeastObjects:
    """Compile every definition; output order follows definition names (deterministic).

    ``address`` (the repository's store) is needed only by signals with ``query_features``.
    """
    sources: list[Any] = []
    views: list[StreamFeatureView] = []
    history: list[OnDemandFeatureView] = []
    for spec in sorted(definitions.signals, key=lambda s: s.name):
        offline, push, view = signal_view(spec)
        sources += [offline, push]
        views.append(view)
        if spec.query_features:
            if address is None:
                raise ValueError(f"signal {spec.name} has query_features: pass the store address")
            history.append(history_view(spec, view, address))
    for segment in sorted(definitions.segments, key=lambda s: s.name):
        offline, push, view = segment_view(segment)
        sources += [offline, push]
        views.append(view)
    for session in sorted(definitions.sessions, key=lambda s: s.name):
        offline, push, view = session_view(session, definitions)
        sources += [offline, push]
        views.append(view)
    return FeastObjects(
        entities=(USER,), sources=tuple(sources), views=tuple(views), on_demand_views=tuple(history)
    )


def repo_objects(repo: Path | str) -> dict[str, Any]:
    """Feast objects of a feature repository, keyed by name.

    A repository registers its definitions with one line in a Python file that ``feast apply``
    imports::

        globals().update(repo_objects(Path(__file__).parent))
    """
    return compile_definitions(load_definitions(repo), store_address(Path(repo))).by_name()


def store_address(repo: Path) -> StoreAddress:
    """The versioned store of a repository as written in its ``feature_store.yaml``."""
    config = yaml.safe_load((repo / "feature_store.yaml").read_text()) or {}
    online = config.get("online_store") or {}
    return StoreAddress(
        project=str(config.get("project")),
        connection_string=online.get("connection_string"),
        redis_type=online.get("redis_type", "redis"),
        key_prefix=online.get("key_prefix", "usp"),
    )
