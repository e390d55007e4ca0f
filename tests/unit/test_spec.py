"""The SignalSpec model: what a definition may say and what it means."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from usp_feast.spec import FIELD_TYPES, RESERVED_COLUMNS, SignalSpec

pytestmark = pytest.mark.unit


def _definition(**changes: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "name": "search",
        "owner": "discovery-team",
        "source": {"topic": "events.search"},
        "fields": {"query": "string", "guests": "int"},
        "transform": "transforms.SearchTransform",
        "retention": "30d",
        "validation": "search",
    }
    definition.update(changes)
    return {k: v for k, v in definition.items() if v is not None}


def _errors(**changes: Any) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        SignalSpec.model_validate(_definition(**changes))
    return [(tuple(e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_a_minimal_definition_gets_the_documented_defaults() -> None:
    spec = SignalSpec.model_validate(_definition())

    assert spec.retention == timedelta(days=30)
    assert spec.ttl is None
    assert spec.online_ttl == timedelta(days=30)
    assert (spec.entity_key, spec.event_time, spec.event_id) == ("user_id", "event_ts", "event_id")
    assert spec.description == ""


def test_ttl_overrides_retention_for_online_freshness() -> None:
    spec = SignalSpec.model_validate(_definition(ttl="1d"))

    assert spec.online_ttl == timedelta(days=1)
    assert spec.retention == timedelta(days=30)


def test_derived_names_follow_the_public_naming_scheme() -> None:
    spec = SignalSpec.model_validate(_definition())

    assert spec.push_source == "search_push"
    assert spec.signal_topic == "usp.signal.search"
    assert spec.dead_letter_topic == "usp.dlq.search"


def test_field_order_is_kept_as_written() -> None:
    spec = SignalSpec.model_validate(_definition(fields={"b": "int", "a": "string", "c": "bool"}))

    assert list(spec.fields) == ["b", "a", "c"]


def test_a_spec_is_frozen() -> None:
    spec = SignalSpec.model_validate(_definition())

    with pytest.raises(ValidationError, match="frozen"):
        spec.retention = timedelta(days=1)  # type: ignore[misc]


def test_dumps_durations_as_the_strings_users_write_and_reads_them_back() -> None:
    spec = SignalSpec.model_validate(_definition(retention="14d", ttl="90m"))

    dumped = spec.model_dump(mode="json")

    assert (dumped["retention"], dumped["ttl"]) == ("2w", "90m")
    assert SignalSpec.model_validate(dumped) == spec


def test_accepts_timedeltas_from_python_callers() -> None:
    spec = SignalSpec.model_validate(_definition(retention=timedelta(hours=6)))

    assert spec.retention == timedelta(hours=6)


@pytest.mark.parametrize("kind", FIELD_TYPES)
def test_accepts_every_documented_field_type(kind: str) -> None:
    spec = SignalSpec.model_validate(_definition(fields={"value": kind}))

    assert spec.fields == {"value": kind}


def test_rejects_an_unknown_key() -> None:
    assert [loc for loc, _ in _errors(retension="30d")] == [("retension",)]


def test_rejects_an_unknown_key_in_source() -> None:
    errors = _errors(source={"topic": "events.search", "partitions": 3})

    assert [loc for loc, _ in errors] == [("source", "partitions")]


@pytest.mark.parametrize("missing", ["name", "owner", "source", "fields", "transform", "retention"])
def test_required_keys(missing: str) -> None:
    definition = _definition()
    del definition[missing]

    with pytest.raises(ValidationError) as caught:
        SignalSpec.model_validate(definition)

    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [((missing,), "missing")]


@pytest.mark.parametrize("column", RESERVED_COLUMNS)
def test_rejects_each_reserved_column_as_a_field(column: str) -> None:
    errors = _errors(fields={"query": "string", column: "int"})

    assert errors == [
        (
            ("fields", column, "[key]"),
            f"Value error, {column!r} is added to every signal row; remove it from fields",
        )
    ]


def test_a_reserved_column_and_a_bad_type_are_both_reported() -> None:
    errors = _errors(fields={"user_id": "int", "guests": "integer"})

    assert sorted(loc for loc, _ in errors) == [
        ("fields", "guests"),
        ("fields", "user_id", "[key]"),
    ]


def test_rejects_an_empty_field_list() -> None:
    assert [loc for loc, _ in _errors(fields={})] == [("fields",)]


@pytest.mark.parametrize("name", ["Search", "1search", "search-v2", "search.v2", "", "a" * 64])
def test_rejects_names_that_are_not_lowercase_identifiers(name: str) -> None:
    assert [loc for loc, _ in _errors(name=name)] == [("name",)]


def test_accepts_a_63_character_name() -> None:
    assert SignalSpec.model_validate(_definition(name="a" * 63)).name == "a" * 63


@pytest.mark.parametrize("path", ["SearchTransform", "transforms.", ".Search", "transforms.1x"])
def test_rejects_a_transform_that_is_not_a_dotted_class_path(path: str) -> None:
    assert [loc for loc, _ in _errors(transform=path)] == [("transform",)]


@pytest.mark.parametrize("topic", ["events search", "events/search", ""])
def test_rejects_invalid_topic_names(topic: str) -> None:
    assert [loc for loc, _ in _errors(source={"topic": topic})] == [("source", "topic")]


@pytest.mark.parametrize("key", ["retention", "ttl"])
def test_durations_must_be_longer_than_zero(key: str) -> None:
    assert _errors(**{key: "0s"}) == [((key,), "Value error, must be longer than zero")]


def test_an_unparsable_duration_names_the_text() -> None:
    [(loc, message)] = _errors(ttl="10mins")

    assert loc == ("ttl",)
    assert "invalid duration '10mins'" in message


def test_rejects_an_empty_owner() -> None:
    assert [loc for loc, _ in _errors(owner="")] == [("owner",)]


@pytest.mark.parametrize(
    ("feature", "words"),
    [
        ({"aggregate": "median:guests", "within": "1h"}, "invalid aggregate 'median:guests'"),
        ({"aggregate": "avg:query", "within": "1h"}, "int or float"),
        ({"aggregate": "count", "within": "8d"}, "at most 7d"),
        ({"aggregate": "count", "within": "1h", "where": "nope == 1"}, "unknown field 'nope'"),
        ({"aggregate": "count", "within": "1h", "where": "guests >"}, "expected a value"),
    ],
)
def test_bad_query_features_are_refused(feature: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SignalSpec(**_definition(query_features={"f": feature}))
