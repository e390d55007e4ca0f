"""The query-time filter language: parsing, schema checks and evaluation."""

from __future__ import annotations

import pytest

from usp_feast.filters import MAX_PREDICATES, FilterError, Predicate, parse_filter

pytestmark = pytest.mark.unit

SCHEMA = {"city": "string", "guests": "int", "price": "float", "instant": "bool", "ts": "timestamp"}


@pytest.mark.parametrize(
    ("text", "predicates"),
    [
        ('city == "Paris"', [("city", "==", "Paris")]),
        ("guests>=2", [("guests", ">=", 2)]),
        ("price < 99.5 and guests != 3", [("price", "<", 99.5), ("guests", "!=", 3)]),
        ('city in ["Paris", "Rome"]', [("city", "in", ("Paris", "Rome"))]),
        ("guests not in [1, 2]", [("guests", "not in", (1, 2))]),
        ("instant == true", [("instant", "==", True)]),
        ('city == "say \\"hi\\""', [("city", "==", 'say "hi"')]),
        ("price > -1e3", [("price", ">", -1000.0)]),
    ],
)
def test_parse(text: str, predicates: list[tuple]) -> None:
    assert parse_filter(text).predicates == tuple(Predicate(*p) for p in predicates)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "filter is empty"),
        ("city", "expected an operator"),
        ("city ==", "expected a value at position 7"),
        ("city = 'Paris'", "unexpected character at position 5"),
        ('city == "Paris" or guests > 1', "expected `and` or the end"),
        ("guests in 2", "expected ["),
        ("guests in [1, 2", "expected ]"),
        ("guests not 2", "`in` after `not`"),
        ("guests == null", "expected a value"),
        (" and ".join(["guests > 1"] * (MAX_PREDICATES + 1)), f"at most {MAX_PREDICATES}"),
    ],
)
def test_parse_errors_say_what_was_expected(text: str, words: str) -> None:
    with pytest.raises(FilterError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_filter(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('colour == "red"', "unknown field 'colour' in filter; fields: city, guests"),
        ('city < "M"', "operator '<' is not allowed for string field 'city'"),
        ("instant > true", "operator '>' is not allowed for bool field"),
        ('guests == "two"', 'guests is a int field; "two" is not a int value'),
        ("guests == 2.5", "2.5 is not a int value"),
        ("price == true", "true is not a float value"),
        ('city in ["Paris", 3]', "3 is not a string value"),
    ],
)
def test_schema_errors_name_field_operator_and_value(text: str, words: str) -> None:
    with pytest.raises(FilterError, match=words):
        parse_filter(text).check(SCHEMA)


def test_valid_filters_pass_the_schema_check() -> None:
    parse_filter('city != "x" and guests in [1, 2] and price >= 3 and instant == false').check(
        SCHEMA
    )
    parse_filter("guests == 2.0").check(SCHEMA)  # a whole float is an int value


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        ('city == "Paris"', {"city": "Paris"}, True),
        ('city == "Paris"', {"city": "paris"}, False),
        ('city != "Paris"', {"city": "Rome"}, True),
        ('city != "Paris"', {"city": None}, False),  # null matches nothing
        ('city != "Paris"', {}, False),
        ('city not in ["Paris"]', {}, False),
        ("guests >= 2", {"guests": 2}, True),
        ("guests > 2", {"guests": 2}, False),
        ("guests < 2", {"guests": "1"}, False),  # a stored value of the wrong type never matches
        ("guests == 1", {"guests": True}, False),  # booleans are not numbers
        ("instant == true", {"instant": 1}, False),
        ("guests == 2", {"guests": 2.0}, True),
        ("price in [1, 2.5]", {"price": 2.5}, True),
        ('guests >= 2 and city == "Rome"', {"guests": 3, "city": "Rome"}, True),
        ('guests >= 2 and city == "Rome"', {"guests": 1, "city": "Rome"}, False),
    ],
)
def test_matches(text: str, fields: dict, expected: bool) -> None:
    assert parse_filter(text).matches(fields) is expected


def test_the_script_form_round_trips() -> None:
    where = parse_filter('city in ["Paris"] and guests > 1')
    assert where.to_json() == '[["city","in",["Paris"]],["guests",">",1]]'
    assert parse_filter(str(where)) == where
