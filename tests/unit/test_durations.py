"""Durations as users write them in YAML and query strings."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usp_feast.durations import DurationError, format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h", timedelta(hours=1)),
        ("14d", timedelta(days=14)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_parses_a_whole_number_and_one_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    ["10mins", "1.5h", "-1m", "", "10", "m", "1h30m", "10M", "ten minutes", "10 minutes"],
)
def test_rejects_anything_else_naming_the_bad_text(text: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse_duration(text)

    message = str(caught.value)
    assert f"invalid duration {text!r}" in message
    # The fix, not just the fault: the message shows what a valid duration looks like.
    assert "10m or 14d" in message


def test_rejects_a_bare_number_from_yaml() -> None:
    # `retention: 10` reaches the parser as an int, not a string.
    with pytest.raises(DurationError, match=r"invalid duration 10\b"):
        parse_duration(10)  # type: ignore[arg-type]


def test_a_duration_error_is_a_value_error() -> None:
    # pydantic turns ValueErrors (only) into validation problems that name the field.
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


def test_an_absurdly_long_duration_is_a_duration_error_not_a_crash() -> None:
    with pytest.raises(DurationError, match=r"'99999999999d' is too long"):
        parse_duration("99999999999d")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(weeks=2), "2w"),
        (timedelta(days=14), "2w"),
        (timedelta(days=30), "30d"),
        (timedelta(hours=24), "1d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
)
def test_formats_with_the_largest_exact_unit(value: timedelta, expected: str) -> None:
    assert format_duration(value) == expected


@given(st.integers(min_value=0, max_value=10**13))
def test_format_then_parse_gives_the_same_duration(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)

    assert parse_duration(format_duration(value)) == value


@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["ms", "s", "m", "h", "d", "w"]),
)
def test_parse_then_format_is_stable(amount: int, unit: str) -> None:
    # Whatever a user writes, the canonical form reads back as the same duration.
    canonical = format_duration(parse_duration(f"{amount}{unit}"))

    assert parse_duration(canonical) == parse_duration(f"{amount}{unit}")
    assert format_duration(parse_duration(canonical)) == canonical
