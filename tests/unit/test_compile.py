"""Compiling definitions into Feast objects.

All compile tests live in this module: importing Feast costs about ten seconds.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import Field, FileSource, PushSource, StreamFeatureView
from feast.types import Array, Bool, Float64, Int64, String, UnixTimestamp
from feast.value_type import ValueType
from google.protobuf.message import Message

from usp_feast.compile import (
    ENGAGEMENT_FIELDS,
    USER,
    FeastObjects,
    compile_definitions,
    history_view,
    repo_objects,
    session_view,
    signal_view,
    store_address,
)
from usp_feast.definitions import DefinitionError, Definitions, load_definitions
from usp_feast.spec import SessionEngagementSpec, SignalSpec

pytestmark = pytest.mark.unit

EXAMPLE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"

# What the example definitions must compile to, written out rather than derived from the
# specs, so a change in how ttl or retention is read shows up here.
EXPECTED = {
    "search": {
        "topic": "events.search",
        "ttl": timedelta(days=1),
        "retention": "30d",
        "fields": {
            "query": String,
            "city": String,
            "checkin": String,
            "checkout": String,
            "guests": Int64,
        },
    },
    "view": {
        "topic": "events.listing_view",
        "ttl": timedelta(days=1),
        "retention": "30d",
        "fields": {"listing_id": Int64, "city": String, "price": Float64, "room_type": String},
    },
    "wishlist": {
        "topic": "events.wishlist_add",
        "ttl": timedelta(days=90),  # no ttl: online freshness is the retention
        "retention": "90d",
        "fields": {"listing_id": Int64},
    },
    "booking": {
        "topic": "events.booking",
        "ttl": timedelta(days=365),
        "retention": "365d",
        "fields": {"listing_id": Int64, "nights": Int64, "price": Float64, "total": Float64},
    },
}


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions(EXAMPLE_REPO)


@pytest.fixture(scope="module")
def compiled(definitions: Definitions) -> FeastObjects:
    return compile_definitions(definitions, store_address(EXAMPLE_REPO))


def _view(compiled: FeastObjects, name: str) -> StreamFeatureView:
    [view] = [v for v in compiled.views if v.name == name]
    return view


def _without_meta(message: Message) -> Message:
    """A copy without the created/updated timestamps Feast stamps on every object."""
    stripped = type(message)()
    stripped.CopyFrom(message)
    _strip_meta(stripped)
    return stripped


def _strip_meta(message: Message) -> None:
    for field, value in message.ListFields():
        if field.name == "meta":
            message.ClearField(field.name)
        elif field.message_type is not None and field.label == field.LABEL_REPEATED:
            if not field.message_type.GetOptions().map_entry:
                for item in value:
                    _strip_meta(item)
        elif field.message_type is not None:
            _strip_meta(value)


def test_every_signal_is_keyed_by_the_one_user_entity(compiled: FeastObjects) -> None:
    assert compiled.entities == (USER,)
    assert (USER.name, USER.join_key, USER.value_type) == ("user", "user_id", ValueType.INT64)
    for view in compiled.views:
        assert view.entities == ["user"]
        assert view.entity_columns == [Field(name="user_id", dtype=Int64)]


def test_views_follow_definition_names_in_order(compiled: FeastObjects) -> None:
    assert [v.name for v in compiled.views] == [
        "booking",
        "search",
        "view",
        "wishlist",
        "wishlist_enriched",
        "segment_active_trip_planner",
        "browse_session",
        "views_10m",
    ]


def test_a_join_signal_compiles_to_a_signal_view_of_its_joined_row(
    compiled: FeastObjects,
) -> None:
    view = next(v for v in compiled.views if v.name == "wishlist_enriched")
    assert {f.name: f.dtype for f in view.features if f.name != "user_id"} == {
        "event_id": String,
        "listing_id": Int64,
        "price": Float64,
        "rating": Float64,
        "available": Bool,
        "right_event_ts": String,
    }
    assert view.stream_source.name == "wishlist_enriched_push"
    assert view.tags["usp.kind"] == "join"
    assert view.tags["usp.topic"] == "events.wishlist_add"
    assert view.tags["usp.right_topic"] == "events.listing_update"


def test_repo_objects_names_everything_feast_apply_registers() -> None:
    names = sorted(repo_objects(EXAMPLE_REPO))

    assert names == sorted(
        ["user", "search_history"]
        + [f"{s}{suffix}" for s in EXPECTED for suffix in ("", "_push", "_source")]
        + [f"segment_active_trip_planner{suffix}" for suffix in ("", "_push", "_source")]
        + [
            f"{s}{suffix}"
            for s in ("wishlist_enriched", "browse_session", "views_10m")
            for suffix in ("", "_push", "_source")
        ]
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_push_source_is_backed_by_the_signal_parquet_file(
    compiled: FeastObjects, name: str
) -> None:
    view = _view(compiled, name)
    push = view.stream_source

    assert isinstance(push, PushSource)
    assert push.name == f"{name}_push"
    assert isinstance(push.batch_source, FileSource)
    assert push.batch_source.name == f"{name}_source"
    assert push.batch_source.path == f"data/signals/{name}"
    assert push.batch_source.timestamp_field == "event_ts"
    assert view.batch_source == push.batch_source
    assert compiled.by_name()[f"{name}_push"] == push
    assert compiled.by_name()[f"{name}_source"] == push.batch_source


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_view_carries_ttl_tags_and_typed_schema(
    compiled: FeastObjects, definitions: Definitions, name: str
) -> None:
    view, expected, spec = _view(compiled, name), EXPECTED[name], definitions.signal(name)

    assert view.ttl == expected["ttl"]
    assert view.tags == {
        "usp.kind": "signal",
        "usp.topic": expected["topic"],
        "usp.retention": expected["retention"],
    }
    assert {f.name: f.dtype for f in view.schema} == {
        "user_id": Int64,
        "event_id": String,
        **expected["fields"],
    }
    assert view.online is True
    assert (view.owner, view.description) == (spec.owner, spec.description)


def test_every_field_type_maps_to_its_feast_type() -> None:
    spec = SignalSpec(
        name="every_type",
        owner="platform",
        source={"topic": "events.every_type"},  # type: ignore[arg-type]
        fields={"s": "string", "i": "int", "f": "float", "b": "bool", "t": "timestamp"},
        transform="transforms.Anything",
        retention="2w",  # type: ignore[arg-type]
        ttl="90m",  # type: ignore[arg-type]
        validation="every_type",
    )

    _, _, view = signal_view(spec)

    assert {f.name: f.dtype for f in view.features} == {
        "b": Bool,
        "event_id": String,
        "f": Float64,
        "i": Int64,
        "s": String,
        "t": UnixTimestamp,
        "user_id": Int64,
    }
    assert view.ttl == timedelta(minutes=90)
    assert view.tags["usp.retention"] == "2w"


def test_the_schema_is_sorted_by_name(compiled: FeastObjects) -> None:
    # The stock view serializes a set, whose order changes with the hash seed; sorting is what
    # makes the registry bytes the same in every process.
    for view in compiled.views:
        names = [f.name for f in view.to_proto().spec.features]
        assert names == sorted(names)
        assert [f.name for f in view.schema] == names


def test_compiling_twice_gives_the_same_objects_and_protos(
    compiled: FeastObjects, definitions: Definitions
) -> None:
    again = compile_definitions(load_definitions(EXAMPLE_REPO), store_address(EXAMPLE_REPO))

    assert again == compiled
    for first, second in zip(compiled.views, again.views, strict=True):
        assert first == second
        first_spec = _without_meta(first.to_proto().spec)
        second_spec = _without_meta(second.to_proto().spec)
        assert first_spec.SerializeToString(deterministic=True) == second_spec.SerializeToString(
            deterministic=True
        )


def test_meta_stripping_only_removes_timestamps(compiled: FeastObjects) -> None:
    # Guards the determinism test: a helper that stripped everything would make it pass.
    spec = _without_meta(_view(compiled, "search").to_proto().spec)

    assert spec.name == "search"
    assert spec.stream_source.batch_source.file_options.uri == "data/signals/search"
    assert not spec.stream_source.HasField("meta")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_registry_copy_equals_the_view(compiled: FeastObjects, name: str) -> None:
    # `feast plan` compares the registry's copy (from proto) with the freshly imported view;
    # any difference shows up as an update on every run.
    view = _view(compiled, name)

    assert StreamFeatureView.from_proto(view.to_proto()) == view
    assert copy.copy(view) == view
    assert type(copy.copy(view)) is type(view)


def test_invalid_definitions_stop_compilation_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "signals").mkdir()
    (tmp_path / "signals" / "a.yaml").write_text("name: a\nretention: 10mins\n")

    with pytest.raises(DefinitionError) as caught:
        repo_objects(tmp_path)

    fields: list[Any] = sorted(p.field for p in caught.value.problems)
    assert fields == ["fields", "owner", "retention", "source", "transform", "validation"]


def test_query_features_become_one_on_demand_view_per_signal(compiled: FeastObjects) -> None:
    [history] = compiled.on_demand_views
    assert history.name == "search_history"
    assert {f.name: f.dtype for f in history.features} == {
        "distinct_cities_1h": Int64,
        "group_searches_24h": Int64,
        "searches_24h": Int64,
        "top_cities_24h": Array(String),
    }
    assert [p.name for p in history.source_feature_view_projections.values()] == ["search"]
    # Feast rebuilds the function from this text where features are served.
    namespace: dict = {}
    exec(history.feature_transformation.udf_string, namespace)
    assert namespace["compute"]({"event_id": ["x", "y"]}) == {
        "distinct_cities_1h": [0, 0],
        "group_searches_24h": [0, 0],
        "searches_24h": [0, 0],
        "top_cities_24h": [[""], [""]],
    }


def test_a_segment_compiles_to_a_membership_view_without_ttl(compiled: FeastObjects) -> None:
    view = _view(compiled, "segment_active_trip_planner")
    assert view.ttl == timedelta(0)  # expiry is the segment's rule, applied at read time
    assert {f.name: f.dtype for f in view.features if f.name != "user_id"} == {
        "event_id": String,
        "in_segment": Bool,
        "entered_at": UnixTimestamp,
        "expires_at": UnixTimestamp,
        "change": String,
        "reason": String,
    }
    assert view.tags["usp.kind"] == "segment"
    assert view.tags["usp.retention"] == "365d"
    assert view.stream_source.name == "segment_active_trip_planner_push"
    assert view.batch_source.path == "data/segments/active_trip_planner"


def test_streaming_aggregate_kinds_type_their_query_features() -> None:
    spec = SignalSpec(
        name="search",
        owner="o",
        source={"topic": "events.search"},
        fields={"city": "string", "guests": "int"},
        transform="transforms.SearchTransform",
        retention="30d",
        validation="search",
        query_features={
            "last_cities": {"aggregate": "last_k:city:3", "within": "1h"},
            "first_search": {"aggregate": "first_ts", "within": "1h"},
            "span": {"aggregate": "duration", "within": "1h"},
        },
    )
    _, _, view = signal_view(spec)
    history = history_view(spec, view, store_address(EXAMPLE_REPO))
    assert {f.name: f.dtype for f in history.features} == {
        "first_search": String,
        "last_cities": Array(String),
        "span": Float64,
    }


# The example sessions' features and their types, written out: aggregate and field type decide it.
SESSION_FEATURES = {
    "browse_session": {
        "events": Int64,
        "top_cities": Array(String),
        "listings_viewed": Int64,
        "avg_price": Float64,
        "last_listings": Array(Int64),
        "duration_s": Float64,
    },
    "views_10m": {
        "count": Int64,
        "distinct_listings": Int64,
        "max_price": Float64,
        "top_room_types": Array(String),
    },
}


@pytest.mark.parametrize(("name", "kind"), [("browse_session", "session"), ("views_10m", "window")])
def test_a_session_compiles_to_a_view_named_like_it(
    compiled: FeastObjects, definitions: Definitions, name: str, kind: str
) -> None:
    view, spec = _view(compiled, name), definitions.session(name)
    assert view.ttl == timedelta(0)  # how long a session counts is its own rule (expires_at)
    assert {f.name: f.dtype for f in view.features} == {
        "user_id": Int64,
        "event_id": String,
        **SESSION_FEATURES[name],
        "started_at": UnixTimestamp,
        "last_event_at": UnixTimestamp,
        "expires_at": UnixTimestamp,
        "closed": Bool,
    }
    assert ENGAGEMENT_FIELDS == ("started_at", "last_event_at", "expires_at", "closed")
    assert view.tags == {
        "usp.kind": "session",
        "usp.window": kind,
        "usp.session": name,
        "usp.topic": f"usp.session.{name}",
        "usp.retention": "90d",
    }
    assert view.online is True
    assert (view.owner, view.description) == ("discovery-team", spec.description)
    push = view.stream_source
    assert isinstance(push, PushSource)
    assert push.name == f"{name}_push"
    assert isinstance(push.batch_source, FileSource)
    assert push.batch_source.name == f"{name}_source"
    assert push.batch_source.path == f"data/sessions/{name}"
    assert push.batch_source.timestamp_field == "event_ts"
    assert StreamFeatureView.from_proto(view.to_proto()) == view  # `feast plan` sees no change


def test_a_session_without_a_description_is_described_by_its_rule(
    definitions: Definitions,
) -> None:
    spec = SessionEngagementSpec(
        name="quick_visit",
        owner="o",
        signals=["search", "view"],
        session={"gap": "5m"},  # type: ignore[arg-type]
        features={"guests": "sum:guests", "first": "first_ts", "ids": "last_k:event_id:2"},
        retention="7d",  # type: ignore[arg-type]
    )
    _, _, view = session_view(spec, definitions)
    assert view.description == "session: 5m gap, over search, view"
    assert view.tags["usp.retention"] == "1w"
    features = {f.name: f.dtype for f in view.features}
    # sum of an int field stays an int; event times are ISO-8601 text; event_id is a string.
    assert (features["guests"], features["first"], features["ids"]) == (
        Int64,
        String,
        Array(String),
    )
