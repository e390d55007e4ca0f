"""Query-time aggregates: parsing, schema checks, and what each one returns."""

from __future__ import annotations

import math
from typing import Any

import pytest

from usp_feast.aggregates import AggregateError, AggregateSpec, aggregate, aggregate_all

pytestmark = pytest.mark.unit

FIELDS = {"city": "string", "guests": "int", "price": "float", "instant": "bool", "at": "timestamp"}


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "name"),
    [
        ("count", AggregateSpec("count"), "count"),
        ("count_distinct:city", AggregateSpec("count_distinct", "city"), "count_distinct_city"),
        ("top_k:city:3", AggregateSpec("top_k", "city", 3), "top_k_city"),
        ("top_k:city:1", AggregateSpec("top_k", "city", 1), "top_k_city"),
        ("top_k:city:100", AggregateSpec("top_k", "city", 100), "top_k_city"),
        ("min:price", AggregateSpec("min", "price"), "min_price"),
        ("max:price", AggregateSpec("max", "price"), "max_price"),
        ("avg:guests", AggregateSpec("avg", "guests"), "avg_guests"),
        ("sum:guests", AggregateSpec("sum", "guests"), "sum_guests"),
        (" avg:guests ", AggregateSpec("avg", "guests"), "avg_guests"),
    ],
)
def test_parses_each_accepted_form(text: str, expected: AggregateSpec, name: str) -> None:
    spec = AggregateSpec.parse(text)

    assert spec == expected
    assert spec.name == name
    assert AggregateSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cnt",
        "COUNT",
        "count:city",
        "count_distinct",
        "count_distinct:",
        "avg",
        "avg:guests:3",
        "top_k",
        "top_k:city",
        "top_k:city:",
        "top_k:city:0",
        "top_k:city:101",
        "top_k:city:-1",
        "top_k:city:x",
        "top_k:city:³",
        "top_k::3",
        "top_k:city:3:4",
        "min:bad-name",
        "sum:price,guests",
    ],
)
def test_rejects_bad_text_naming_it_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(AggregateError) as caught:
        AggregateSpec.parse(text)

    message = str(caught.value)
    assert f"invalid aggregate {text!r}" in message
    assert "count, count_distinct:FIELD, top_k:FIELD:K (K from 1 to 100)" in message
    assert "avg:FIELD or sum:FIELD" in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("top_k:city", "top_k needs K"),
        ("top_k:city:101", "K must be a whole number from 1 to 100"),
        ("median:price", "unknown kind 'median'"),
        ("count:city", "count takes no field"),
    ],
)
def test_a_parse_error_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(AggregateError, match=f"\\({reason}\\)"):
        AggregateSpec.parse(text)


def test_an_aggregate_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid aggregate"):
        AggregateSpec.parse("nope")


@pytest.mark.parametrize(
    ("kind", "field", "k"),
    [("top_k", "city", 0), ("top_k", "city", True), ("avg", None, None), ("count", "city", None)],
)
def test_building_a_spec_directly_is_checked_too(kind: str, field: str | None, k: Any) -> None:
    with pytest.raises(AggregateError, match="invalid aggregate"):
        AggregateSpec(kind, field, k)


# --- schema checks -----------------------------------------------------------------------------


def test_check_names_an_unknown_field_and_lists_the_known_ones() -> None:
    with pytest.raises(AggregateError) as caught:
        AggregateSpec.parse("top_k:cty:3").check(FIELDS)

    assert str(caught.value) == (
        "aggregate 'top_k:cty:3' uses unknown field 'cty'; "
        "known fields: at, city, guests, instant, price"
    )


@pytest.mark.parametrize(
    ("text", "actual"),
    [
        ("avg:city", "string"),
        ("sum:instant", "bool"),
        ("min:at", "timestamp"),
        ("max:city", "string"),
    ],
)
def test_check_refuses_numeric_aggregates_of_other_types(text: str, actual: str) -> None:
    with pytest.raises(AggregateError) as caught:
        AggregateSpec.parse(text).check(FIELDS)

    field = text.split(":")[1]
    assert str(caught.value) == (
        f"aggregate {text!r} needs an int or float field, but {field!r} is {actual}"
    )


@pytest.mark.parametrize(
    "text",
    [
        "count",
        "count_distinct:city",
        "count_distinct:at",
        "top_k:instant:2",
        "avg:guests",
        "max:price",
    ],
)
def test_check_accepts_aggregates_that_fit(text: str) -> None:
    AggregateSpec.parse(text).check(FIELDS)


# --- each aggregate ----------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"city": "Rome", "guests": 2, "price": 80.5},
    {"city": "Oslo", "guests": None, "price": 120.0},
    {"city": None, "guests": 4},  # price missing: counts as null
    {"city": "Rome", "guests": 3, "price": float("nan")},  # NaN counts as null
    {"city": "Oslo", "guests": 1, "price": 40.0},
]


@pytest.mark.parametrize(
    ("text", "over_rows", "over_nothing"),
    [
        ("count", 5, 0),
        ("count_distinct:city", 2, 0),
        ("count_distinct:guests", 4, 0),
        ("top_k:city:5", [["Rome", 2], ["Oslo", 2]], []),
        ("min:guests", 1, None),
        ("max:guests", 4, None),
        ("sum:guests", 10, None),
        ("avg:guests", 2.5, None),
        ("min:price", 40.0, None),
        ("max:price", 120.0, None),
        ("sum:price", 240.5, None),
        ("avg:price", 240.5 / 3, None),
    ],
)
def test_each_aggregate_skips_nulls_and_handles_no_rows(
    text: str, over_rows: Any, over_nothing: Any
) -> None:
    spec = AggregateSpec.parse(text)

    assert aggregate(spec, ROWS) == over_rows
    assert aggregate(spec, []) == over_nothing


@pytest.mark.parametrize("kind", ["min", "max", "avg", "sum"])
def test_numeric_aggregates_of_only_nulls_are_none(kind: str) -> None:
    rows: list[dict[str, Any]] = [{"guests": None}, {}, {"guests": float("nan")}]

    assert aggregate(AggregateSpec(kind, "guests"), rows) is None


def test_sum_of_ints_stays_an_int_and_avg_is_a_float() -> None:
    rows = [{"guests": 2}, {"guests": 2}]

    total = aggregate(AggregateSpec("sum", "guests"), rows)
    mean = aggregate(AggregateSpec("avg", "guests"), rows)

    assert (total, type(total)) == (4, int)
    assert (mean, type(mean)) == (2.0, float)


def test_avg_of_floats_does_not_drift() -> None:
    rows = [{"price": 0.1}] * 10

    assert aggregate(AggregateSpec("avg", "price"), rows) == 0.1
    assert aggregate(AggregateSpec("sum", "price"), rows) == 1.0


@pytest.mark.parametrize("bad", ["3", True])
def test_a_numeric_aggregate_meeting_a_non_number_says_where(bad: Any) -> None:
    with pytest.raises(AggregateError, match=f"non-numeric value {bad!r} in field 'guests'"):
        aggregate(AggregateSpec("sum", "guests"), [{"guests": 1}, {"guests": bad}])


# --- top_k ordering ----------------------------------------------------------------------------


def test_top_k_is_most_frequent_first_and_cut_at_k() -> None:
    rows = [{"city": c} for c in ["Oslo", "Rome", "Rome", "Rome", "Oslo", "Lima"]]

    assert aggregate(AggregateSpec("top_k", "city", 2), rows) == [["Rome", 3], ["Oslo", 2]]
    assert aggregate(AggregateSpec("top_k", "city", 10), rows) == [
        ["Rome", 3],
        ["Oslo", 2],
        ["Lima", 1],
    ]


def test_top_k_ties_go_to_the_value_seen_first() -> None:
    # b first appears before a; both twice -> b ranks above a; c and d tie at one, c seen first
    rows = [{"city": c} for c in ["b", "c", "a", "a", "b", "d"]]

    assert aggregate(AggregateSpec("top_k", "city", 3), rows) == [["b", 2], ["a", 2], ["c", 1]]


def test_top_k_ignores_nulls_and_missing_fields() -> None:
    rows: list[dict[str, Any]] = [{"city": None}, {}, {"city": None}, {"city": "Rome"}]

    assert aggregate(AggregateSpec("top_k", "city", 3), rows) == [["Rome", 1]]


# --- several at once ---------------------------------------------------------------------------


def test_aggregate_all_reads_a_one_shot_iterable_once_for_every_aggregate() -> None:
    specs = [AggregateSpec.parse(t) for t in ("count", "top_k:city:1", "max:guests", "avg:price")]

    result = aggregate_all(specs, (row for row in ROWS))

    assert result == {
        "count": 5,
        "top_k_city": [["Rome", 2]],
        "max_guests": 4,
        "avg_price": pytest.approx(240.5 / 3),
    }


def test_aggregate_all_of_no_rows() -> None:
    specs = [AggregateSpec.parse(t) for t in ("count", "count_distinct:city", "sum:guests")]

    assert aggregate_all(specs, iter([])) == {
        "count": 0,
        "count_distinct_city": 0,
        "sum_guests": None,
    }


def test_aggregate_all_refuses_two_aggregates_with_the_same_result_key() -> None:
    specs = [AggregateSpec.parse("top_k:city:3"), AggregateSpec.parse("top_k:city:5")]

    with pytest.raises(AggregateError, match="share the result key 'top_k_city'"):
        aggregate_all(specs, ROWS)


def test_aggregate_all_accepts_the_same_aggregate_twice() -> None:
    specs = [AggregateSpec.parse("count"), AggregateSpec.parse("count")]

    assert aggregate_all(specs, ROWS) == {"count": 5}


def test_nan_is_not_a_distinct_value() -> None:
    rows = [{"price": float("nan")}, {"price": float("nan")}, {"price": 1.0}]

    assert aggregate(AggregateSpec("count_distinct", "price"), rows) == 1
    assert not math.isnan(aggregate(AggregateSpec("max", "price"), rows))
