r"""Event contracts: Great Expectations suites compiled into fast per-event checks.

The contracts of the raw topics are Great Expectations (GE) expectation suites, stored as the JSON
that ``ExpectationSuite.to_json_dict()`` writes (``validation/<event_type>.json``). Running GE
itself on every Kafka event costs milliseconds; this module reads the suite JSON without importing
GE and compiles each expectation once into a closure, so checking an event costs microseconds and
reports *every* violated expectation, each as a one-line :class:`Violation`.

Example:
    >>> contract = Contract.from_dict(
    ...     {
    ...         "name": "search",
    ...         "expectations": [
    ...             {
    ...                 "type": "expect_column_values_to_be_between",
    ...                 "kwargs": {"column": "guests", "min_value": 1.0, "max_value": 16.0},
    ...             },
    ...             {
    ...                 "type": "expect_column_values_to_not_be_null",
    ...                 "kwargs": {"column": "city"},
    ...             },
    ...         ],
    ...     },
    ...     source="search.json",
    ... )
    >>> contract.check({"guests": 2, "city": "Paris"})
    []
    >>> for violation in contract.check({"guests": 20}):
    ...     print(violation.message)
    guests=20 is above the maximum 16
    city is missing
    >>> contract.check_bytes(b'{"guests": 3, "city": "Rome"')[1][0].expectation
    'payload.json'

Semantics: the verdicts are those of GE 1.24.1 on a pandas batch. An event is one row of a
DataFrame in which every column has ``dtype=object`` (so values keep their Python types) and a
missing key is a null. Row by row this means (GE sources under
``great_expectations/expectations/``):

* Nulls (``None``, NaN, and the other values ``pandas.isnull`` treats as missing) pass every
  value expectation except ``expect_column_values_to_not_be_null``; GE drops them before
  applying the condition (``metrics/map_metric_provider/column_condition_partial.py``).
* ``expect_column_values_to_be_of_type`` / ``..._in_type_list``: ``isinstance`` against the
  classes GE derives from each name (``metrics/column_map_metrics/column_values_of_type.py``,
  ``column_values_in_type_list.py``, ``type_comparison.native_type_type_map``): the numpy scalar
  type ``numpy.dtype(name).type`` (else a pandas class of that name) plus the Python type
  (``"int"`` means ``int`` or ``numpy.int64``, so ``True`` *is* an int; ``"float"`` means
  ``float``; ``"str"`` means ``str``; ``"bool"`` means ``bool`` or ``numpy.bool_``). The type
  names ``object``, ``object_`` and ``O`` always pass, as GE then checks the column dtype,
  which is object.
* ``expect_column_values_to_be_between``: Python comparisons with the bounds, which GE turns
  into floats (``metrics/column_map_metrics/column_values_between.py``). A string, list or
  dict value cannot be compared with a number: GE raises ``TypeError`` and fails the whole
  expectation for the whole batch without naming rows; here only that event fails, with a
  violation of the same expectation that says the value is not comparable.
* ``expect_column_values_to_match_regex`` and ``expect_column_value_lengths_to_be_between``:
  non-string values are converted with ``str()`` first (GE calls ``astype(str)``), so
  ``checkin=20260101`` is tested as the text ``"20260101"``; the regex is applied with
  ``re.search`` (``$`` also matches before a trailing newline, ``\d`` matches any Unicode
  digit), lengths count code points.
* ``expect_column_values_to_be_in_set``: hash-and-equality membership (``1``, ``1.0`` and
  ``True`` are the same member); lists and dicts are never members.
* ``expect_table_columns_to_match_set``: checked on the event's own keys, i.e. the columns of a
  one-event batch; with ``exact_match`` false every listed column must be present (a key whose
  value is null is present), with ``exact_match`` true (GE's default) no other key is allowed.
* ``mostly``: a fraction of a batch cannot be applied to a single event, so a suite whose
  expectation sets ``mostly`` below 1 is rejected; ``row_condition`` is rejected too
  (:class:`UnsupportedExpectation`). Severity is not interpreted: GE reports a failed
  "warning" expectation as failed, and so does this module.

Everything GE would reject or fail on at validation time for every batch (unknown type names,
unknown arguments, invalid regexes, bounds in the wrong order, suite parameters) is rejected
here when the suite is compiled, with a :class:`ContractError` naming the file, the expectation
and the fix. ``tests/unit/test_contracts_vs_ge.py`` checks the row-by-row agreement with GE.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "SUPPORTED_EXPECTATIONS",
    "Contract",
    "ContractError",
    "UnsupportedExpectation",
    "Violation",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024


class ContractError(ValueError):
    """A suite cannot be compiled into a contract (the message names the file and the fix)."""


class UnsupportedExpectation(ContractError):
    """A suite uses an expectation (or an option of one) that per-event contracts cannot check.

    Attributes:
        source: The suite file (or other label) the expectation came from.
        index: Position of the expectation in the suite's ``expectations`` list.
        expectation_type: The expectation's ``type``.
    """

    def __init__(
        self, source: str, index: int, expectation_type: str, reason: str | None = None
    ) -> None:
        self.source = source
        self.index = index
        self.expectation_type = expectation_type
        self.reason = reason
        what = reason or "is not supported by per-event contracts"
        super().__init__(
            f"{source}: expectations[{index}] ({expectation_type}) {what}; supported types: "
            f"{', '.join(SUPPORTED_EXPECTATIONS)}. Remove it from the suite or rewrite it with a "
            "supported type."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.index, self.expectation_type, self.reason))


@dataclass(frozen=True)
class Violation:
    """One failed expectation of one event.

    Attributes:
        expectation: The expectation type (e.g. ``expect_column_values_to_be_between``), or
            ``payload.size`` / ``payload.encoding`` / ``payload.json`` / ``payload.object``
            when the raw payload could not be read as a JSON object.
        column: The field concerned, or None for table-level and payload violations.
        message: One line for people and dead-letter records, e.g.
            ``guests=20 is above the maximum 16``.
    """

    expectation: str
    column: str | None
    message: str


_Check = Callable[[Mapping[str, Any]], Violation | None]
_MISSING: Any = object()

# Exact classes that pandas.isnull never treats as missing: the common JSON values skip the
# slower null test below.
_NEVER_NULL = frozenset({str, int, bool, list, dict})


def _is_null(value: Any) -> bool:
    """``pandas.isnull`` for one scalar, without importing pandas."""
    if value is None:
        return True
    cls = value.__class__
    if cls in _NEVER_NULL:
        return False
    if cls is float or isinstance(value, float | complex):
        return bool(value != value)
    if isinstance(value, str | bytes | int | list | dict | tuple):
        return False
    if cls.__module__.startswith("pandas") and cls.__name__ in ("NAType", "NaTType"):
        return True
    # numpy floating NaN, numpy datetime64/timedelta64 NaT, Decimal("NaN"): unequal to themselves.
    try:
        unequal = value != value
        if unequal is True:
            return True
        return (
            type(unequal).__module__ == "numpy"
            and getattr(unequal, "ndim", 1) == 0
            and bool(unequal)
        )
    except Exception:
        return False


def _as_text(value: Any) -> str | None:
    """The text GE's ``Series.astype(str)`` makes of a value (None if it cannot)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return str(value)


def _show(value: Any, limit: int = 80) -> str:
    """A short one-line representation of a value for messages."""
    text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(bound: float) -> str:
    """``16.0`` → ``16``, ``0.5`` → ``0.5`` (bounds are floats once GE has parsed the suite)."""
    if bound.is_integer() and abs(bound) < 1e15:
        return str(int(bound))
    return repr(bound)


class _Expectation:
    """One expectation being compiled: its arguments and how to complain about them."""

    def __init__(self, source: str, index: int, etype: str, kwargs: dict[str, Any]) -> None:
        self.source = source
        self.index = index
        self.type = etype
        self.kwargs = kwargs

    def error(self, problem: str, fix: str) -> ContractError:
        return ContractError(
            f"{self.source}: expectations[{self.index}] ({self.type}): {problem}; {fix}."
        )

    def column(self) -> str:
        column = self.kwargs.get("column")
        if not isinstance(column, str) or not column:
            raise self.error(
                f"'column' must be a non-empty string, got {_show(column)}",
                "name the event field this expectation checks",
            )
        return column

    def flag(self, name: str) -> bool:
        value = self.kwargs.get(name, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(f"'{name}' must be true or false, got {_show(value)}", "fix the value")
        return value


# --- compilers: one per supported expectation type; each returns the per-event closure ---------


def _not_null(exp: _Expectation) -> _Check:
    name, column = exp.type, exp.column()
    missing = Violation(name, column, f"{column} is missing")
    null = Violation(name, column, f"{column} is null")

    def check(event: Mapping[str, Any]) -> Violation | None:
        value = event.get(column, _MISSING)
        if value is _MISSING:
            return missing
        if value is None or (value.__class__ not in _NEVER_NULL and _is_null(value)):
            return null
        return None

    return check


def _resolve_type_name(exp: _Expectation, type_name: Any) -> tuple[type, ...]:
    """The classes GE 1.24's pandas map metric accepts for ``type_name`` (see module docs)."""
    if not isinstance(type_name, str) or not type_name:
        raise exp.error(
            f"type names must be non-empty strings, got {_show(type_name)}",
            "use a Python or numpy type name such as int, float, str, bool, int64",
        )
    found: list[type] = []
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with pandas and Feast
        numpy = None  # type: ignore[assignment]
    if numpy is not None:
        try:
            found.append(numpy.dtype(type_name).type)
        except TypeError:
            found.extend(_pandas_types(type_name))
        except Exception as exc:
            raise exp.error(
                f"numpy cannot read the type name {type_name!r} ({exc})",
                "use a Python or numpy type name such as int, float, str, bool, int64",
            ) from exc
    found.extend(_NATIVE_TYPES.get(type_name.lower(), ()))
    if not found:
        raise exp.error(
            f"{type_name!r} is not a type name Great Expectations knows for pandas",
            "use a Python or numpy type name such as int, float, str, bool, int64",
        )
    return tuple(dict.fromkeys(found))


def _pandas_types(type_name: str) -> list[type]:
    """Pandas classes GE accepts when numpy does not know a name (e.g. ``Timestamp``)."""
    try:
        import pandas
        from pandas.core.dtypes import dtypes
    except ImportError:  # pragma: no cover - pandas comes with Feast
        return []
    found = []
    for namespace in (pandas, dtypes):
        candidate = getattr(namespace, type_name, None)
        if isinstance(candidate, type):
            found.append(candidate)
    return found


# great_expectations.expectations.type_comparison.native_type_type_map (keys are lower-cased).
_NATIVE_TYPES: dict[str, tuple[type, ...]] = {
    "none": (type(None),),
    "bool": (bool,),
    "int": (int,),
    "long": (int,),
    "float": (float,),
    "bytes": (bytes,),
    "complex": (complex,),
    "str": (str,),
    "string_types": (str,),
    "list": (list,),
    "dict": (dict,),
}
# With one of these names GE checks the column's dtype instead of each value; the batch of
# events is an all-object DataFrame, so the expectation always passes.
_OBJECT_TYPE_NAMES = frozenset({"object", "object_", "O"})


def _type_check(exp: _Expectation, column: str, classes: tuple[type, ...], expected: str) -> _Check:
    name = exp.type

    def check(event: Mapping[str, Any]) -> Violation | None:
        value = event.get(column)
        if value is None or (value.__class__ not in _NEVER_NULL and _is_null(value)):
            return None
        if isinstance(value, classes):
            return None
        return Violation(
            name,
            column,
            f"{column}={_show(value)} has type {type(value).__name__}, expected {expected}",
        )

    return check


def _of_type(exp: _Expectation) -> _Check | None:
    column = exp.column()
    type_name = exp.kwargs.get("type_")
    if type_name in _OBJECT_TYPE_NAMES:
        return None
    return _type_check(exp, column, _resolve_type_name(exp, type_name), str(type_name))


def _in_type_list(exp: _Expectation) -> _Check:
    column = exp.column()
    names = exp.kwargs.get("type_list")
    if not isinstance(names, list) or not names:
        raise exp.error(
            f"'type_list' must be a non-empty list of type names, got {_show(names)}",
            'list the accepted types, e.g. ["int", "float"]',
        )
    classes: list[type] = []
    for type_name in names:
        classes.extend(_resolve_type_name(exp, type_name))
    expected = "one of " + ", ".join(str(n) for n in names)
    return _type_check(exp, column, tuple(dict.fromkeys(classes)), expected)


def _in_set(exp: _Expectation) -> _Check:
    name, column = exp.type, exp.column()
    value_set = exp.kwargs.get("value_set")
    if not isinstance(value_set, list):
        raise exp.error(
            f"'value_set' must be a list, got {_show(value_set)}", "list the allowed values"
        )
    for member in value_set:
        if member is not None and not isinstance(member, str | int | float):
            raise exp.error(
                f"value_set member {_show(member)} is not a string, number, boolean or null",
                "list scalar values only",
            )
    members = frozenset(value_set)
    shown = ", ".join(_show(m, 40) for m in value_set[:8])
    if len(value_set) > 8:
        shown += f", ... ({len(value_set) - 8} more)"

    def check(event: Mapping[str, Any]) -> Violation | None:
        value = event.get(column)
        if value is None or (value.__class__ not in _NEVER_NULL and _is_null(value)):
            return None
        try:
            if value in members:
                return None
        except TypeError:  # unhashable (list, dict): never a member, as in pandas' isin
            pass
        return Violation(name, column, f"{column}={_show(value)} is not one of {shown}")

    return check


def _numeric_bound(exp: _Expectation, key: str) -> float | None:
    value = exp.kwargs.get(key)
    if value is None:
        return None
    # GE's pydantic model turns numeric bounds into floats; comparisons then use the float.
    if isinstance(value, bool | int | float):
        try:
            return float(value)
        except OverflowError as exc:
            raise exp.error(
                f"'{key}' {value} is too large for a float", "use a smaller bound"
            ) from exc
    raise exp.error(
        f"'{key}' must be a number, got {_show(value)}",
        "per-event contracts support numeric bounds only",
    )


def _check_bounds(
    exp: _Expectation, low: float | None, high: float | None, show: Callable[[Any], str]
) -> None:
    """Reject a range with no bound, or with its bounds the wrong way round."""
    if low is None and high is None:
        raise exp.error("neither 'min_value' nor 'max_value' is set", "set at least one bound")
    if low is not None and high is not None and low > high:
        raise exp.error(
            f"'min_value' {show(low)} is above 'max_value' {show(high)}", "swap the bounds"
        )


def _between(exp: _Expectation) -> _Check:
    name, column = exp.type, exp.column()
    low, high = _numeric_bound(exp, "min_value"), _numeric_bound(exp, "max_value")
    strict_min, strict_max = exp.flag("strict_min"), exp.flag("strict_max")
    _check_bounds(exp, low, high, _number)
    low_text = "" if low is None else _number(low)
    high_text = "" if high is None else _number(high)
    below = "is not above the exclusive minimum" if strict_min else "is below the minimum"
    above = "is not below the exclusive maximum" if strict_max else "is above the maximum"
    bounds_text = " and ".join(
        text
        for text in (
            f"the minimum {low_text}" if low is not None else "",
            f"the maximum {high_text}" if high is not None else "",
        )
        if text
    )

    def incomparable(value: Any) -> Violation:
        return Violation(
            name,
            column,
            f"{column}={_show(value)} ({type(value).__name__}) cannot be compared with "
            f"{bounds_text}; expected a number",
        )

    def check(event: Mapping[str, Any]) -> Violation | None:
        value = event.get(column)
        if value is None or (value.__class__ not in _NEVER_NULL and _is_null(value)):
            return None
        if isinstance(value, str):  # GE raises TypeError: str vs numeric bound
            return incomparable(value)
        try:
            # Same comparisons in the same order as GE's is_between (short-circuit `and`).
            if low is not None and not (value > low if strict_min else value >= low):
                return Violation(name, column, f"{column}={_show(value)} {below} {low_text}")
            if high is not None and not (value < high if strict_max else value <= high):
                return Violation(name, column, f"{column}={_show(value)} {above} {high_text}")
        except TypeError:
            return incomparable(value)
        return None

    return check


def _length_bound(exp: _Expectation, key: str) -> int | None:
    value = exp.kwargs.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise exp.error(f"'{key}' must be a whole number, got {_show(value)}", "fix the bound")


def _lengths_between(exp: _Expectation) -> _Check:
    name, column = exp.type, exp.column()
    low, high = _length_bound(exp, "min_value"), _length_bound(exp, "max_value")
    strict_min, strict_max = exp.flag("strict_min"), exp.flag("strict_max")
    _check_bounds(exp, low, high, str)
    below = "not above the exclusive minimum" if strict_min else "below the minimum"
    above = "not below the exclusive maximum" if strict_max else "above the maximum"

    def judge(value: Any, text: str) -> Violation | None:
        length = len(text)
        if low is not None and (length <= low if strict_min else length < low):
            return Violation(
                name, column, f"{column}={_show(value)} has length {length}, {below} {low}"
            )
        if high is not None and (length >= high if strict_max else length > high):
            return Violation(
                name, column, f"{column}={_show(value)} has length {length}, {above} {high}"
            )
        return None

    return _text_check(name, column, judge)


def _match_regex(exp: _Expectation) -> _Check:
    name, column = exp.type, exp.column()
    regex = exp.kwargs.get("regex", "(?s).*")  # GE's default
    if not isinstance(regex, str):
        raise exp.error(f"'regex' must be a string, got {_show(regex)}", "fix the pattern")
    try:
        search = re.compile(regex).search
    except re.error as exc:
        raise exp.error(
            f"'regex' {regex!r} is not a valid regular expression ({exc})", "fix the pattern"
        ) from exc

    def judge(value: Any, text: str) -> Violation | None:
        if search(text) is None:
            return Violation(name, column, f"{column}={_show(value)} does not match {regex}")
        return None

    return _text_check(name, column, judge)


def _text_check(name: str, column: str, judge: Callable[[Any, str], Violation | None]) -> _Check:
    """A check on a column's text: nulls pass (GE skips them), bytes that are not UTF-8 fail."""

    def check(event: Mapping[str, Any]) -> Violation | None:
        value = event.get(column)
        if value is None or (value.__class__ not in _NEVER_NULL and _is_null(value)):
            return None
        text = value if value.__class__ is str else _as_text(value)
        if text is None:
            return Violation(name, column, f"{column}={_show(value)} is not valid UTF-8 text")
        return judge(value, text)

    return check


def _table_columns(exp: _Expectation) -> _Check:
    name = exp.type
    column_set = exp.kwargs.get("column_set")
    if not isinstance(column_set, list) or not all(isinstance(c, str) for c in column_set):
        raise exp.error(
            f"'column_set' must be a list of field names, got {_show(column_set)}",
            "list the fields every event must carry",
        )
    exact = exp.kwargs.get("exact_match", True)  # GE's default is an exact match
    if exact is not None and not isinstance(exact, bool):
        raise exp.error(f"'exact_match' must be true or false, got {_show(exact)}", "fix it")
    ordered = list(dict.fromkeys(column_set))
    required = frozenset(ordered)

    def check(event: Mapping[str, Any]) -> Violation | None:
        keys = event.keys()
        if keys >= required:
            if not exact or len(keys) == len(required):
                return None
            extra = sorted(str(k) for k in keys if k not in required)
            return Violation(name, None, f"unexpected fields: {', '.join(extra)}")
        missing = [c for c in ordered if c not in keys]
        return Violation(name, None, f"missing required fields: {', '.join(missing)}")

    return check


_COMPILERS: dict[str, Callable[[_Expectation], _Check | None]] = {
    "expect_table_columns_to_match_set": _table_columns,
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_of_type": _of_type,
    "expect_column_values_to_be_in_type_list": _in_type_list,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_value_lengths_to_be_between": _lengths_between,
}
SUPPORTED_EXPECTATIONS: tuple[str, ...] = tuple(_COMPILERS)

# Arguments each type accepts (GE's models forbid any other); the first group is common to
# column map expectations, "ignored" ones only shape GE's result object.
_IGNORED_KWARGS = frozenset({"batch_id", "result_format", "catch_exceptions", "include_config"})
_MAP_KWARGS = frozenset({"column", "mostly", "row_condition", "condition_parser"})
_KWARGS: dict[str, frozenset[str]] = {
    "expect_table_columns_to_match_set": frozenset({"column_set", "exact_match"}),
    "expect_column_values_to_not_be_null": _MAP_KWARGS,
    "expect_column_values_to_be_of_type": _MAP_KWARGS | {"type_"},
    "expect_column_values_to_be_in_type_list": _MAP_KWARGS | {"type_list"},
    "expect_column_values_to_be_in_set": _MAP_KWARGS | {"value_set"},
    "expect_column_values_to_be_between": _MAP_KWARGS
    | {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_match_regex": _MAP_KWARGS | {"regex"},
    "expect_column_value_lengths_to_be_between": _MAP_KWARGS
    | {"min_value", "max_value", "strict_min", "strict_max"},
}


def _compile_one(source: str, index: int, raw: Any) -> tuple[_Check | None, list[str]]:
    """Compile ``expectations[index]``: the closure (None if it always passes), its columns."""
    if not isinstance(raw, dict):
        raise ContractError(f"{source}: expectations[{index}] must be an object, got {_show(raw)}")
    etype = raw.get("type")
    if not isinstance(etype, str):
        hint = (
            " (this looks like a Great Expectations 0.x suite; re-save it with GE 1.x)"
            if "expectation_type" in raw
            else ""
        )
        raise ContractError(f"{source}: expectations[{index}] has no 'type'{hint}")
    if etype not in _COMPILERS:
        raise UnsupportedExpectation(source, index, etype)
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ContractError(
            f"{source}: expectations[{index}] ({etype}): 'kwargs' must be an object"
        )
    exp = _Expectation(source, index, etype, kwargs)
    unknown = sorted(set(kwargs) - _KWARGS[etype] - _IGNORED_KWARGS)
    if unknown:
        raise exp.error(
            f"unknown argument(s) {', '.join(unknown)}",
            "remove them (Great Expectations rejects them too)",
        )
    for key, value in kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            raise exp.error(
                f"'{key}' is a suite parameter, which a per-event contract cannot resolve",
                "write the value into the suite",
            )
    if kwargs.get("row_condition") not in (None, ""):
        raise UnsupportedExpectation(
            source, index, etype, "uses row_condition, which per-event contracts do not support"
        )
    mostly = kwargs.get("mostly", 1)
    if isinstance(mostly, bool) or not isinstance(mostly, int | float) or mostly != 1:
        raise exp.error(
            f"mostly={_show(mostly)} is a share of a batch and cannot be applied to a single event",
            "remove 'mostly' (or set it to 1.0) and watch the dead-letter rate instead",
        )
    check = _COMPILERS[etype](exp)
    if etype == "expect_table_columns_to_match_set":
        columns = list(kwargs["column_set"])
    else:
        columns = [kwargs["column"]]
    return check, columns


class Contract:
    """The compiled checks of one expectation suite.

    Build one with :meth:`load` or :meth:`from_dict`; a contract is immutable, safe to share
    between threads, and pickles by recompiling its suite.

    Attributes:
        name: The suite's name (e.g. ``search``).
        source: Where the suite came from (a file path or the label given to
            :meth:`from_dict`); error messages start with it.
        columns: The event fields the suite mentions, in order of first mention.
    """

    __slots__ = ("_checks", "_suite", "columns", "name", "source")

    def __init__(
        self,
        name: str,
        source: str,
        checks: tuple[_Check, ...],
        columns: tuple[str, ...],
        suite: dict[str, Any],
    ) -> None:
        self.name = name
        self.source = source
        self.columns = columns
        self._checks = checks
        self._suite = suite

    @classmethod
    def load(cls, path: Path | str) -> Contract:
        """Read and compile a suite file written by GE's ``suite.to_json_dict()``.

        Args:
            path: The suite's JSON file, e.g. ``validation/search.json``.

        Returns:
            The compiled contract.

        Raises:
            ContractError: The file is missing, is not JSON, or holds a suite that cannot be
                compiled (:class:`UnsupportedExpectation` for unsupported expectations).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ContractError(
                f"{path}: cannot read the suite ({exc.strerror or exc}); check the path"
            ) from exc
        except UnicodeDecodeError as exc:
            raise ContractError(f"{path}: the suite is not UTF-8 text ({exc.reason})") from exc
        try:
            suite = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(
                f"{path}: the suite is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                f"{exc.msg})"
            ) from exc
        return cls.from_dict(suite, source=str(path))

    @classmethod
    def from_dict(cls, suite: dict[str, Any], source: str) -> Contract:
        """Compile a suite given as the dict ``suite.to_json_dict()`` returns.

        Args:
            suite: The suite (``name`` and ``expectations``; ``meta``, ``notes`` and ``id`` are
                ignored).
            source: A label for error messages, usually the file the suite came from.

        Returns:
            The compiled contract.

        Raises:
            ContractError: The suite is malformed or uses arguments per-event checks cannot
                honour; :class:`UnsupportedExpectation` names an unsupported expectation.
        """
        if not isinstance(suite, dict):
            raise ContractError(f"{source}: a suite must be a JSON object, got {_show(suite)}")
        name = suite.get("name")
        if not isinstance(name, str) or not name:
            raise ContractError(f"{source}: the suite has no 'name'")
        expectations = suite.get("expectations")
        if not isinstance(expectations, list):
            raise ContractError(f"{source}: the suite has no 'expectations' list")
        checks: list[_Check] = []
        columns: dict[str, None] = {}
        for index, raw in enumerate(expectations):
            check, mentioned = _compile_one(source, index, raw)
            if check is not None:
                checks.append(check)
            columns.update(dict.fromkeys(mentioned))
        logger.debug("compiled contract %s from %s: %d checks", name, source, len(checks))
        return cls(name, source, tuple(checks), tuple(columns), copy.deepcopy(suite))

    def check(self, event: Mapping[str, Any]) -> list[Violation]:
        """Every expectation the event violates, in suite order (empty when it is valid).

        Args:
            event: A decoded event (a JSON object as a dict); extra fields are ignored.

        Returns:
            The violations; an empty list means the event satisfies the contract.

        Raises:
            TypeError: ``event`` is not a mapping (use :meth:`check_bytes` for raw payloads).
        """
        if event.__class__ is not dict and not isinstance(event, Mapping):
            raise TypeError(
                f"Contract.check takes a mapping, got {type(event).__name__}; "
                "use check_bytes for raw payloads"
            )
        return [v for check in self._checks if (v := check(event)) is not None]

    def check_bytes(
        self, raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> tuple[dict[str, Any] | None, list[Violation]]:
        """Decode a raw Kafka payload and check it.

        The payload must be at most ``max_bytes`` long, UTF-8, and strict JSON (RFC 8259, read
        with orjson: no ``NaN``/``Infinity``, no byte-order mark, no lone surrogates; integers
        outside the 64-bit range decode as floats and so fail an ``int`` type check) whose top
        level is an object.

        Args:
            raw: The message value.
            max_bytes: Larger payloads are rejected without being parsed.

        Returns:
            ``(event, violations)``: the decoded object (None when the payload is not a JSON
            object) and every violation (a single ``payload.*`` one when it could not be read).
        """
        if not isinstance(raw, bytes):
            raw = bytes(raw)
        size = len(raw)
        if size > max_bytes:
            return None, [
                Violation(
                    "payload.size",
                    None,
                    f"payload is {size} bytes, above the limit of {max_bytes} bytes",
                )
            ]
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return None, [
                    Violation(
                        "payload.encoding",
                        None,
                        f"payload is not UTF-8: {bad.reason} at byte {bad.start}",
                    )
                ]
            return None, [Violation("payload.json", None, f"payload is not valid JSON: {exc}")]
        if not isinstance(event, dict):
            return None, [
                Violation(
                    "payload.object",
                    None,
                    f"payload is a JSON {_json_kind(event)}, expected an object",
                )
            ]
        return event, self.check(event)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Contract.from_dict, (self._suite, self.source))

    def __repr__(self) -> str:
        return f"Contract(name={self.name!r}, source={self.source!r}, checks={len(self._checks)})"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
