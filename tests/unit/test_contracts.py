"""Compiled event contracts: each supported expectation, raw payloads, and suite errors.

The row-by-row agreement with Great Expectations itself is tested in test_contracts_vs_ge.py;
these tests pin down the behaviour a user sees (verdicts and messages) without GE.
"""

from __future__ import annotations

import decimal
import doctest
import json
import pickle
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import usp_feast.contracts as contracts_module
from usp_feast.contracts import (
    SUPPORTED_EXPECTATIONS,
    Contract,
    ContractError,
    UnsupportedExpectation,
    Violation,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VALIDATION = ROOT / "validation"

# One valid event per shipped contract (DESIGN.md section 8).
VALID_EVENTS: dict[str, dict[str, Any]] = {
    "search": {
        "event_id": "e-1",
        "event_ts": "2026-11-26T17:00:00.123Z",
        "user_id": 42,
        "query": "beach house",
        "city": "Lisbon",
        "checkin": "2026-12-01",
        "checkout": "2026-12-05",
        "guests": 2,
    },
    "listing_view": {
        "event_id": "e-2",
        "event_ts": "2026-11-26T17:00:00Z",
        "user_id": 42,
        "listing_id": 7,
        "city": "Lisbon",
        "price": 120.5,
        "room_type": "entire_home",
    },
    "wishlist_add": {
        "event_id": "e-3",
        "event_ts": "2026-11-26T17:00:00+00:00",
        "user_id": 42,
        "listing_id": 7,
    },
    "booking": {
        "event_id": "e-4",
        "event_ts": "2026-11-26T17:00:00.123456Z",
        "user_id": 42,
        "listing_id": 7,
        "nights": 3,
        "price": 360,
    },
    "listing_update": {
        "event_id": "e-5",
        "event_ts": "2026-11-26T17:00:00Z",
        "listing_id": 7,
        "price": 99.0,
        "rating": 4.8,
        "available": True,
    },
}


def contract(*expectations: tuple[str, dict[str, Any]], source: str = "test.json") -> Contract:
    suite = {
        "name": "test",
        "expectations": [{"type": etype, "kwargs": kwargs} for etype, kwargs in expectations],
    }
    return Contract.from_dict(suite, source=source)


def messages(found: list[Violation]) -> list[str]:
    return [v.message for v in found]


# --- the shipped suites ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID_EVENTS))
def test_shipped_suite_compiles_and_accepts_a_valid_event(name: str) -> None:
    loaded = Contract.load(VALIDATION / f"{name}.json")

    assert loaded.name == name
    assert loaded.columns[:2] == ("event_id", "event_ts")
    assert set(VALID_EVENTS[name]) == set(loaded.columns)
    assert loaded.check(VALID_EVENTS[name]) == []
    # Extra fields are allowed and ignored.
    assert loaded.check({**VALID_EVENTS[name], "utm_source": ["x"], "debug": None}) == []


def test_every_shipped_suite_is_covered() -> None:
    assert {p.stem for p in VALIDATION.glob("*.json")} == set(VALID_EVENTS)


def test_all_violations_are_reported_in_suite_order() -> None:
    search = Contract.load(VALIDATION / "search.json")
    event = {
        "event_id": "",
        "event_ts": "2026-11-26 17:00",
        "user_id": 0,
        "query": None,
        "checkin": 20261201,
        "checkout": "2026-12-05",
        "guests": 20,
    }

    found = search.check(event)

    assert [(v.expectation, v.column) for v in found] == [
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_not_be_null", "query"),
        ("expect_column_values_to_not_be_null", "city"),
        ("expect_column_value_lengths_to_be_between", "event_id"),
        ("expect_column_values_to_match_regex", "event_ts"),
        ("expect_column_values_to_be_between", "user_id"),
        ("expect_column_values_to_match_regex", "checkin"),
        ("expect_column_values_to_be_between", "guests"),
    ]
    assert messages(found) == [
        "missing required fields: city",
        "query is null",
        "city is missing",
        "event_id='' has length 0, below the minimum 1",
        "event_ts='2026-11-26 17:00' does not match "
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|\+00:00)\Z",
        "user_id=0 is below the minimum 1",
        r"checkin=20261201 does not match ^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z",
        "guests=20 is above the maximum 16",
    ]
    assert all("\n" not in m for m in messages(found))


# --- each supported expectation ---------------------------------------------------------------


def test_not_null_tells_missing_from_null() -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "city"}))

    assert c.check({"city": "Rome"}) == []
    assert c.check({"city": ""}) == []
    assert messages(c.check({})) == ["city is missing"]
    assert messages(c.check({"city": None})) == ["city is null"]
    assert messages(c.check({"city": float("nan")})) == ["city is null"]


def test_other_expectations_skip_nulls_as_great_expectations_does() -> None:
    c = contract(
        ("expect_column_values_to_be_of_type", {"column": "x", "type_": "int"}),
        ("expect_column_values_to_be_between", {"column": "x", "min_value": 1.0}),
        ("expect_column_values_to_match_regex", {"column": "x", "regex": "^a$"}),
        ("expect_column_value_lengths_to_be_between", {"column": "x", "min_value": 5}),
        ("expect_column_values_to_be_in_set", {"column": "x", "value_set": ["a"]}),
    )

    for null in (None, float("nan"), np.float64("nan"), pd.NA, pd.NaT):
        assert c.check({"x": null}) == [], null
    assert c.check({}) == []


@pytest.mark.parametrize(
    "value",
    [
        None,
        float("nan"),
        np.float32("nan"),
        pd.NA,
        pd.NaT,
        np.datetime64("NaT"),
        decimal.Decimal("NaN"),
        complex("nan"),
        0,
        "",
        "nan",
        [None],
        {},
        False,
        pd.Timestamp("2026-01-01"),
        decimal.Decimal("1.5"),
        np.int64(0),
    ],
)
def test_null_means_what_pandas_isnull_means(value: Any) -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "x"}))

    # What GE's not_null computes: isnull() of an object column.
    assert bool(c.check({"x": value})) == bool(pd.Series([value], dtype=object).isnull().iloc[0])


@pytest.mark.parametrize(
    ("type_", "accepted", "rejected"),
    [
        # True is an int for Python, so for Great Expectations too.
        ("int", [1, -5, 2**70, True, np.int64(3)], [2.0, "5", [1], np.int32(3), np.bool_(True)]),
        ("float", [2.0, float("inf"), np.float64(1.5)], [2, True, "2.0"]),
        ("str", ["", "é", np.str_("x")], [1, b"x", ["a"]]),
        ("bool", [True, False, np.bool_(False)], [0, 1, "true"]),
        ("int64", [np.int64(3)], [3, True]),
    ],
)
def test_of_type(type_: str, accepted: list[Any], rejected: list[Any]) -> None:
    c = contract(("expect_column_values_to_be_of_type", {"column": "x", "type_": type_}))

    for value in accepted:
        assert c.check({"x": value}) == [], value
    for value in rejected:
        assert len(c.check({"x": value})) == 1, value


def test_of_type_message() -> None:
    c = contract(("expect_column_values_to_be_of_type", {"column": "guests", "type_": "int"}))

    assert messages(c.check({"guests": 2.0})) == ["guests=2.0 has type float, expected int"]


def test_of_type_object_always_passes() -> None:
    # GE checks the column dtype for "object", and a batch of events is all-object.
    c = contract(("expect_column_values_to_be_of_type", {"column": "x", "type_": "object"}))

    assert c.check({"x": [1]}) == []


def test_in_type_list() -> None:
    c = contract(
        ("expect_column_values_to_be_in_type_list", {"column": "p", "type_list": ["int", "float"]})
    )

    for value in (0, 1.5, True, np.float64(2.0)):
        assert c.check({"p": value}) == [], value
    assert messages(c.check({"p": "12"})) == ["p='12' has type str, expected one of int, float"]
    assert len(c.check({"p": decimal.Decimal("1.5")})) == 1


def test_in_set() -> None:
    c = contract(
        (
            "expect_column_values_to_be_in_set",
            {"column": "room_type", "value_set": ["entire_home", "private_room"]},
        )
    )

    assert c.check({"room_type": "private_room"}) == []
    assert messages(c.check({"room_type": "castle"})) == [
        "room_type='castle' is not one of 'entire_home', 'private_room'"
    ]
    assert len(c.check({"room_type": "Private_room"})) == 1
    # Unhashable values are simply not members.
    assert len(c.check({"room_type": ["private_room"]})) == 1


def test_in_set_compares_numbers_by_value() -> None:
    c = contract(("expect_column_values_to_be_in_set", {"column": "n", "value_set": [1, 2.5]}))

    for value in (1, 1.0, True, 2.5, np.int64(1)):
        assert c.check({"n": value}) == [], value
    assert len(c.check({"n": "1"})) == 1


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"min_value": 1.0, "max_value": 16.0}, 20, "guests=20 is above the maximum 16"),
        ({"min_value": 1.0, "max_value": 16.0}, 0, "guests=0 is below the minimum 1"),
        ({"min_value": 1.0, "max_value": 16.0}, 16, None),
        ({"min_value": 1.0, "max_value": 16.0}, 1, None),
        ({"min_value": 1.0, "max_value": 16.0}, 16.5, "guests=16.5 is above the maximum 16"),
        ({"min_value": 1.0, "max_value": 16.0}, True, None),  # True == 1, as in GE
        (
            {"min_value": 1.0, "strict_min": True},
            1,
            "guests=1 is not above the exclusive minimum 1",
        ),
        (
            {"max_value": 16.0, "strict_max": True},
            16,
            "guests=16 is not below the exclusive maximum 16",
        ),
        ({"max_value": 16.0}, -(2**70), None),
        ({"min_value": 0.5}, float("inf"), None),
        ({"max_value": 0.5}, float("inf"), "guests=inf is above the maximum 0.5"),
    ],
)
def test_between(kwargs: dict[str, Any], value: Any, message: str | None) -> None:
    c = contract(("expect_column_values_to_be_between", {"column": "guests", **kwargs}))

    assert messages(c.check({"guests": value})) == ([message] if message else [])


@pytest.mark.parametrize("value", ["12", "", [1], {"a": 1}, b"1"])
def test_between_on_an_incomparable_value_fails_that_event(value: Any) -> None:
    # GE raises TypeError for the whole batch here; the contract fails just this event.
    c = contract(("expect_column_values_to_be_between", {"column": "price", "min_value": 0.0}))

    (violation,) = c.check({"price": value})

    assert violation.expectation == "expect_column_values_to_be_between"
    assert violation.column == "price"
    assert "cannot be compared with the minimum 0; expected a number" in violation.message


def test_match_regex_uses_search_on_the_text_of_the_value() -> None:
    c = contract(
        ("expect_column_values_to_match_regex", {"column": "d", "regex": r"^\d{4}-\d{2}-\d{2}$"})
    )

    assert c.check({"d": "2026-12-01"}) == []
    # Python's re: "$" matches before a final newline, \d matches any Unicode digit.
    assert c.check({"d": "2026-12-01\n"}) == []
    assert c.check({"d": "\u0662\u0660\u0662\u0666-\u0661\u0662-\u0660\u0661"}) == []
    # Non-strings are matched as str(value), like GE's astype(str).
    assert messages(c.check({"d": 20261201})) == [r"d=20261201 does not match ^\d{4}-\d{2}-\d{2}$"]
    unanchored = contract(("expect_column_values_to_match_regex", {"column": "d", "regex": "rue"}))
    assert unanchored.check({"d": True}) == []


@pytest.mark.parametrize(
    ("kwargs", "value", "fails"),
    [
        ({"min_value": 1, "max_value": 3}, "abc", False),
        ({"min_value": 1, "max_value": 3}, "abcd", True),
        ({"min_value": 1, "max_value": 3}, "", True),
        ({"min_value": 1, "max_value": 3}, "👍👍👍", False),  # code points, not bytes
        ({"min_value": 1, "max_value": 3}, 123, False),  # len(str(123))
        ({"min_value": 1, "max_value": 3}, 1234, True),
        ({"min_value": 1, "max_value": 3}, True, True),  # "True"
        ({"min_value": 1, "max_value": 3, "strict_max": True}, "abc", True),
        ({"min_value": 1, "strict_min": True}, "a", True),
        ({"max_value": 2.0}, "ab", False),
    ],
)
def test_value_lengths(kwargs: dict[str, Any], value: Any, fails: bool) -> None:
    c = contract(("expect_column_value_lengths_to_be_between", {"column": "q", **kwargs}))

    assert bool(c.check({"q": value})) == fails


def test_value_lengths_message() -> None:
    c = contract(("expect_column_value_lengths_to_be_between", {"column": "q", "max_value": 3}))

    # Long values are cut to 80 characters in messages.
    assert messages(c.check({"q": "x" * 500})) == [
        "q='" + "x" * 76 + "... has length 500, above the maximum 3"
    ]


def test_table_columns_required_fields() -> None:
    c = contract(
        ("expect_table_columns_to_match_set", {"column_set": ["a", "b", "c"], "exact_match": False})
    )

    assert c.check({"a": 1, "b": 2, "c": 3, "extra": 4}) == []
    assert c.check({"a": None, "b": None, "c": None}) == []  # present, even if null
    assert messages(c.check({"b": 2})) == ["missing required fields: a, c"]


def test_table_columns_exact_match_is_the_default() -> None:
    c = contract(("expect_table_columns_to_match_set", {"column_set": ["a", "b"]}))

    assert c.check({"b": 1, "a": 2}) == []
    assert messages(c.check({"a": 1, "b": 2, "z": 3, "y": 4})) == ["unexpected fields: y, z"]
    assert messages(c.check({"a": 1, "z": 3})) == ["missing required fields: b"]


def test_columns_lists_every_mentioned_field_once() -> None:
    c = contract(
        ("expect_table_columns_to_match_set", {"column_set": ["a", "b"], "exact_match": False}),
        ("expect_column_values_to_not_be_null", {"column": "c"}),
        ("expect_column_values_to_not_be_null", {"column": "a"}),
    )

    assert c.columns == ("a", "b", "c")


def test_check_accepts_any_mapping_but_not_other_objects() -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "a"}))

    assert c.check(types.MappingProxyType({"a": 1})) == []
    with pytest.raises(TypeError, match="use check_bytes"):
        c.check(b'{"a": 1}')  # type: ignore[arg-type]


# --- check_bytes ----------------------------------------------------------------------------


def test_check_bytes_decodes_and_checks() -> None:
    booking = Contract.load(VALIDATION / "booking.json")
    raw = json.dumps({**VALID_EVENTS["booking"], "nights": 0}).encode()

    event, found = booking.check_bytes(raw)

    assert event == {**VALID_EVENTS["booking"], "nights": 0}
    assert messages(found) == ["nights=0 is below the minimum 1"]
    assert booking.check_bytes(json.dumps(VALID_EVENTS["booking"]).encode()) == (
        VALID_EVENTS["booking"],
        [],
    )


@pytest.mark.parametrize(
    ("raw", "expectation", "message"),
    [
        (b"\xff\xfe{}", "payload.encoding", "payload is not UTF-8: invalid start byte at byte 0"),
        (b'{"a": 1', "payload.json", "payload is not valid JSON: "),
        (b'{"a": NaN}', "payload.json", "payload is not valid JSON: "),
        (b"", "payload.json", "payload is not valid JSON: "),
        (b"[1, 2]", "payload.object", "payload is a JSON array, expected an object"),
        (b'"event"', "payload.object", "payload is a JSON string, expected an object"),
        (b"42", "payload.object", "payload is a JSON number, expected an object"),
        (b"true", "payload.object", "payload is a JSON boolean, expected an object"),
        (b"null", "payload.object", "payload is a JSON null, expected an object"),
    ],
)
def test_check_bytes_rejects_unreadable_payloads(
    raw: bytes, expectation: str, message: str
) -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "a"}))

    event, found = c.check_bytes(raw)

    assert event is None
    assert [(v.expectation, v.column) for v in found] == [(expectation, None)]
    assert found[0].message.startswith(message)
    assert "\n" not in found[0].message


def test_check_bytes_size_limit() -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "a"}))
    raw = b'{"a": "' + b"x" * 91 + b'"}'  # 100 bytes

    assert c.check_bytes(raw, max_bytes=100)[1] == []
    assert c.check_bytes(raw, max_bytes=99) == (
        None,
        [Violation("payload.size", None, "payload is 100 bytes, above the limit of 99 bytes")],
    )
    assert c.check_bytes(bytearray(raw))[1] == []


def test_check_bytes_integer_beyond_64_bits_fails_an_int_type_check() -> None:
    c = contract(("expect_column_values_to_be_of_type", {"column": "id", "type_": "int"}))

    assert c.check_bytes(b'{"id": 18446744073709551615}')[1] == []
    (violation,) = c.check_bytes(b'{"id": 18446744073709551616}')[1]
    assert violation.message == "id=1.8446744073709552e+19 has type float, expected int"


# --- suites that cannot be compiled ---------------------------------------------------------


def test_unsupported_expectation_names_file_index_type_and_alternatives(tmp_path: Path) -> None:
    suite = json.loads((VALIDATION / "wishlist_add.json").read_text())
    suite["expectations"].insert(
        2, {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "event_id"}}
    )
    path = tmp_path / "wishlist_add.json"
    path.write_text(json.dumps(suite))

    with pytest.raises(UnsupportedExpectation) as caught:
        Contract.load(path)

    message = str(caught.value)
    assert message.startswith(
        f"{path}: expectations[2] (expect_column_values_to_be_unique) is not supported by "
        "per-event contracts; supported types: "
    )
    for supported in SUPPORTED_EXPECTATIONS:
        assert supported in message
    assert (caught.value.source, caught.value.index) == (str(path), 2)
    assert caught.value.expectation_type == "expect_column_values_to_be_unique"
    assert isinstance(caught.value, ContractError)
    assert str(pickle.loads(pickle.dumps(caught.value))) == message


def test_supported_expectations_are_the_required_ones() -> None:
    assert set(SUPPORTED_EXPECTATIONS) == {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_values_to_match_regex",
        "expect_column_value_lengths_to_be_between",
        "expect_table_columns_to_match_set",
    }


def test_row_condition_is_unsupported() -> None:
    with pytest.raises(UnsupportedExpectation, match=r"expectations\[0\].*uses row_condition"):
        contract(
            (
                "expect_column_values_to_not_be_null",
                {
                    "column": "a",
                    "row_condition": 'b=="x"',
                    "condition_parser": "great_expectations",
                },
            )
        )


@pytest.mark.parametrize("mostly", [0.95, 0, 0.0])
def test_mostly_below_one_is_rejected(mostly: float) -> None:
    with pytest.raises(ContractError, match="cannot be applied to a single event"):
        contract(("expect_column_values_to_not_be_null", {"column": "a", "mostly": mostly}))


def test_mostly_one_is_accepted() -> None:
    c = contract(("expect_column_values_to_not_be_null", {"column": "a", "mostly": 1.0}))

    assert len(c.check({})) == 1


@pytest.mark.parametrize(
    ("expectation", "match"),
    [
        (("expect_column_values_to_be_between", {"column": "a"}), "neither 'min_value' nor"),
        (
            ("expect_column_values_to_be_between", {"column": "a", "min_value": 5, "max_value": 1}),
            "'min_value' 5 is above 'max_value' 1",
        ),
        (("expect_column_values_to_be_between", {"column": "a", "min_value": "5"}), "a number"),
        (("expect_column_values_to_be_between", {"column": "a", "max_vale": 3}), "max_vale"),
        (("expect_column_values_to_be_of_type", {"column": "a", "type_": "string"}), "'string'"),
        (("expect_column_values_to_be_of_type", {"column": "a"}), "type names must be"),
        (
            ("expect_column_values_to_be_in_type_list", {"column": "a", "type_list": ["int", "x"]}),
            "'x' is not a type name",
        ),
        (("expect_column_values_to_match_regex", {"column": "a", "regex": "("}), "not a valid"),
        (("expect_column_value_lengths_to_be_between", {"column": "a", "min_value": 1.5}), "whole"),
        (("expect_column_values_to_be_in_set", {"column": "a", "value_set": [[1]]}), "scalar"),
        (("expect_column_values_to_not_be_null", {}), "'column' must be a non-empty string"),
        (
            (
                "expect_column_values_to_be_between",
                {"column": "a", "min_value": {"$PARAMETER": "m"}},
            ),
            "suite parameter",
        ),
        (("expect_table_columns_to_match_set", {"column_set": "abc"}), "list of field names"),
    ],
)
def test_invalid_arguments_are_rejected_with_the_place(
    expectation: tuple[str, dict[str, Any]], match: str
) -> None:
    with pytest.raises(ContractError, match=match) as caught:
        contract(expectation, source="validation/x.json")

    assert str(caught.value).startswith(f"validation/x.json: expectations[0] ({expectation[0]})")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ContractError, match=f"{missing}: cannot read the suite"):
        Contract.load(missing)

    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n "expectations": [}')
    with pytest.raises(ContractError, match=rf"{broken}: the suite is not valid JSON \(line 2"):
        Contract.load(broken)

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"name": "x", "expectations": [{"expectation_type": "x"}]}))
    with pytest.raises(ContractError, match=r"Great Expectations 0\.x suite"):
        Contract.load(old)

    for bad, match in [([], "must be a JSON object"), ({"expectations": []}, "no 'name'")]:
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ContractError, match=match):
            Contract.load(path)


# --- plumbing -------------------------------------------------------------------------------


def test_contract_pickles_by_recompiling() -> None:
    original = Contract.load(VALIDATION / "search.json")
    event = {**VALID_EVENTS["search"], "guests": 17}

    copy = pickle.loads(pickle.dumps(original))

    assert (copy.name, copy.source, copy.columns) == (
        original.name,
        original.source,
        original.columns,
    )
    assert copy.check(event) == original.check(event) != []


def test_docstring_examples_pass() -> None:
    result = doctest.testmod(contracts_module, optionflags=doctest.ELLIPSIS)

    assert result.failed == 0
    assert result.attempted > 0
