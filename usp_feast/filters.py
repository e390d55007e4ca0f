"""Query-time filters on signal fields: a tiny language, checked against the signal's schema.

A filter is one or more predicates joined by ``and``::

    city == "Paris" and guests >= 2
    room_type in ["entire_home", "private_room"]
    price < 120.5 and event_id != "e-17"

Operators: ``==``, ``!=``, ``in``, ``not in`` for every type, and ``<``, ``<=``, ``>``, ``>=``
for ``int`` and ``float`` fields. Values are JSON literals: double-quoted strings, numbers,
``true``/``false``, or a list of those after ``in``/``not in``. A missing or null field matches
no predicate (as in SQL), whatever the operator.

The same :class:`Filter` is evaluated in two places that must agree: inside Redis by the history
script (``recent.lua``, from :meth:`Filter.to_json`) and in Python by :meth:`Filter.matches`
(tests compare them). Nothing here talks to Redis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["MAX_PREDICATES", "Filter", "FilterError", "Predicate", "parse_filter"]

MAX_PREDICATES = 8
"""At most this many predicates per filter (each costs the server work per scanned event)."""
_MAX_LIST = 100

_COMPARISONS = ("<", "<=", ">", ">=")
_OPERATORS = ("==", "!=", "in", "not in", *_COMPARISONS)
_OPERATORS_BY_TYPE = {
    "string": ("==", "!=", "in", "not in"),
    "bool": ("==", "!=", "in", "not in"),
    "timestamp": ("==", "!=", "in", "not in"),
    "int": _OPERATORS,
    "float": _OPERATORS,
}
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<op>==|!=|<=|>=|<|>)
    | (?P<punct>[\[\],])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """A filter that cannot be parsed or does not fit the signal's schema."""


@dataclass(frozen=True)
class Predicate:
    """``field op value``; ``value`` is a tuple for ``in`` / ``not in``."""

    field: str
    op: str
    value: Any

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """Whether a record's fields satisfy this predicate (null never matches)."""
        actual = fields.get(self.field)
        if actual is None:
            return False
        if self.op == "==":
            return _equal(actual, self.value)
        if self.op == "!=":
            return not _equal(actual, self.value)
        if self.op == "in":
            return any(_equal(actual, v) for v in self.value)
        if self.op == "not in":
            return not any(_equal(actual, v) for v in self.value)
        if not _is_number(actual):
            return False
        if self.op == "<":
            return bool(actual < self.value)
        if self.op == "<=":
            return bool(actual <= self.value)
        if self.op == ">":
            return bool(actual > self.value)
        return bool(actual >= self.value)

    def __str__(self) -> str:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return f"{self.field} {self.op} {orjson.dumps(value).decode()}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(actual: Any, wanted: Any) -> bool:
    # Booleans never equal numbers (JSON and Lua agree; Python's True == 1 does not).
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return isinstance(actual, bool) and isinstance(wanted, bool) and actual == wanted
    return bool(actual == wanted)


@dataclass(frozen=True)
class Filter:
    """Predicates that must all hold.

    Example:
        >>> where = parse_filter('city == "Paris" and guests >= 2')
        >>> where.check({"city": "string", "guests": "int"})
        >>> where.matches({"city": "Paris", "guests": 3}), where.matches({"city": "Rome"})
        (True, False)
        >>> str(where)
        'city == "Paris" and guests >= 2'

    """

    predicates: tuple[Predicate, ...]

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """Whether every predicate holds for a record's fields."""
        return all(p.matches(fields) for p in self.predicates)

    def check(self, field_types: Mapping[str, str]) -> None:
        """Check fields, operators and value types against a signal's schema.

        Raises:
            FilterError: Naming the first unknown field, operator not allowed for the field's
                type, or value of the wrong type.

        """
        for p in self.predicates:
            kind = field_types.get(p.field)
            if kind is None:
                known = ", ".join(sorted(field_types))
                raise FilterError(f"unknown field {p.field!r} in filter; fields: {known}")
            allowed = _OPERATORS_BY_TYPE[kind]
            if p.op not in allowed:
                raise FilterError(
                    f"operator {p.op!r} is not allowed for {kind} field {p.field!r}; "
                    f"use one of {', '.join(allowed)}"
                )
            values = p.value if p.op in ("in", "not in") else (p.value,)
            for value in values:
                if not _fits(kind, value):
                    raise FilterError(
                        f"{p.field} is a {kind} field; {orjson.dumps(value).decode()} is not "
                        f"a {kind} value (in `{p}`)"
                    )

    def to_json(self) -> str:
        """The form the history script evaluates: ``[[field, op, value], ...]``."""
        return orjson.dumps(
            [
                [p.field, p.op, list(p.value) if p.op in ("in", "not in") else p.value]
                for p in self.predicates
            ]
        ).decode()

    def __str__(self) -> str:
        return " and ".join(str(p) for p in self.predicates)


def _fits(kind: str, value: Any) -> bool:
    if kind in ("string", "timestamp"):
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return _is_number(value) and float(value).is_integer()
    return _is_number(value)  # float


def parse_filter(text: str) -> Filter:
    """Parse ``field op value [and field op value ...]``.

    Raises:
        FilterError: Naming what was expected and where (character position).

    Example:
        >>> parse_filter('room_type in ["entire_home", "private_room"]').predicates[0].value
        ('entire_home', 'private_room')
        >>> parse_filter("guests >=")
        Traceback (most recent call last):
        ...
        usp_feast.filters.FilterError: filter 'guests >=': expected a value at position 9

    """
    tokens = _tokenize(text)
    position = 0
    predicates: list[Predicate] = []

    def fail(expected: str) -> FilterError:
        at = tokens[position][2] if position < len(tokens) else len(text)
        return FilterError(f"filter {text!r}: expected {expected} at position {at}")

    def take(kind: str, expected: str) -> Any:
        nonlocal position
        if position >= len(tokens) or tokens[position][0] != kind:
            raise fail(expected)
        position += 1
        return tokens[position - 1][1]

    def literal() -> Any:
        nonlocal position
        if position >= len(tokens):
            raise fail("a value")
        kind, raw, _ = tokens[position]
        if kind in ("string", "number"):
            position += 1
            return orjson.loads(raw)
        if kind == "word" and raw in ("true", "false"):
            position += 1
            return raw == "true"
        raise fail("a value (a double-quoted string, a number, true or false)")

    while True:
        field = take("word", "a field name")
        if position < len(tokens) and tokens[position][:2] == ("word", "not"):
            position += 1
            if position >= len(tokens) or tokens[position][:2] != ("word", "in"):
                raise fail("`in` after `not`")
            position += 1
            op = "not in"
        elif position < len(tokens) and tokens[position][:2] == ("word", "in"):
            position += 1
            op = "in"
        else:
            op = take("op", f"an operator ({', '.join(_OPERATORS)})")
        if op in ("in", "not in"):
            take("[", "[")
            values = [literal()]
            while position < len(tokens) and tokens[position][0] == ",":
                position += 1
                values.append(literal())
            take("]", "]")
            if len(values) > _MAX_LIST:
                raise FilterError(f"filter {text!r}: at most {_MAX_LIST} values after {op}")
            predicates.append(Predicate(field, op, tuple(values)))
        else:
            predicates.append(Predicate(field, op, literal()))
        if position == len(tokens):
            break
        if tokens[position][:2] != ("word", "and"):
            raise fail("`and` or the end of the filter")
        position += 1
    if len(predicates) > MAX_PREDICATES:
        raise FilterError(f"filter {text!r}: at most {MAX_PREDICATES} predicates")
    return Filter(tuple(predicates))


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(kind, text, position)`` per token; punctuation's kind is the character itself."""
    tokens: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            at = len(text[position:]) - len(text[position:].lstrip()) + position
            raise FilterError(f"filter {text!r}: unexpected character at position {at}")
        kind = match.lastgroup or ""
        raw = match.group(kind)
        tokens.append((raw if kind == "punct" else kind, raw, match.start(kind)))
        position = match.end()
    if not tokens:
        raise FilterError('filter is empty; write e.g. city == "Paris"')
    return tokens
