"""Query-time aggregations over a list of signal rows: ``count``, ``top_k:city:3``, ``avg:guests``.

Aggregates are written as short texts in query strings and parsed into :class:`AggregateSpec`:

=====================  ==================================================================
``count``              number of rows
``count_distinct:F``   number of distinct non-null values of field ``F``
``top_k:F:K``          the ``K`` (1 to 100) most frequent non-null values of ``F``, as
                       ``[value, count]`` pairs, most frequent first; ties go to the value
                       that appears first in the rows
``min:F`` ``max:F``    smallest / largest non-null value of the int or float field ``F``
``avg:F`` ``sum:F``    mean (a float) / total of the non-null values of ``F``
=====================  ==================================================================

A missing field counts as null, and so does a float NaN. ``min``, ``max``, ``avg`` and ``sum``
give ``None`` when there is no non-null value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "AGGREGATE_KINDS",
    "AggregateError",
    "AggregateSpec",
    "aggregate",
    "aggregate_all",
]

AGGREGATE_KINDS: tuple[str, ...] = ("count", "count_distinct", "top_k", "min", "max", "avg", "sum")
_NUMERIC_KINDS = frozenset({"min", "max", "avg", "sum"})
_NUMERIC_TYPES = frozenset({"int", "float"})
_MAX_K = 100
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMS = (
    "count, count_distinct:FIELD, top_k:FIELD:K (K from 1 to 100), "
    "min:FIELD, max:FIELD, avg:FIELD or sum:FIELD"
)


class AggregateError(ValueError):
    """An aggregate that does not parse, does not fit the signal's fields, or meets bad data."""


def _problem(kind: object, field: object, k: object) -> str | None:
    """What is wrong with an aggregate's parts, or ``None``; shared by the spec and its parser."""
    if kind not in AGGREGATE_KINDS:
        return f"unknown kind {kind!r}"
    if kind == "count":
        return None if field is None and k is None else "count takes no field"
    if not isinstance(field, str) or not _FIELD.match(field):
        return f"{kind} needs a field name"
    if kind != "top_k":
        return None if k is None else f"{kind} takes no K"
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= _MAX_K:
        return f"K must be a whole number from 1 to {_MAX_K}"
    return None


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregation to compute over a signal's rows.

    Args:
        kind: One of ``count``, ``count_distinct``, ``top_k``, ``min``, ``max``, ``avg``,
            ``sum``.
        field: The field aggregated; required by every kind but ``count``.
        k: How many values ``top_k`` returns, from 1 to 100; only for ``top_k``.

    Raises:
        AggregateError: When the kind is unknown or ``field``/``k`` do not fit the kind.

    Example:
        >>> spec = AggregateSpec.parse("top_k:city:3")
        >>> spec
        AggregateSpec(kind='top_k', field='city', k=3)
        >>> spec.name, str(spec)
        ('top_k_city', 'top_k:city:3')

    """

    kind: str
    field: str | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.kind, self.field, self.k)
        if problem is not None:
            raise AggregateError(f"invalid aggregate {str(self)!r} ({problem}): use {_FORMS}")

    @classmethod
    def parse(cls, text: str) -> AggregateSpec:
        """Parse ``count``, ``count_distinct:city``, ``top_k:city:3``, ``avg:guests`` and so on.

        Raises:
            AggregateError: Naming the text and the accepted forms, when it does not parse.

        Example:
            >>> AggregateSpec.parse("avg:guests")
            AggregateSpec(kind='avg', field='guests', k=None)
            >>> AggregateSpec.parse("top_k:city")
            Traceback (most recent call last):
            ...
            usp_feast.aggregates.AggregateError: invalid aggregate 'top_k:city' (...): use ...

        """
        if not isinstance(text, str):
            raise AggregateError(f"invalid aggregate {text!r}: use {_FORMS}")
        parts = text.strip().split(":")
        kind = parts[0]
        field = parts[1] if len(parts) > 1 else None
        k: int | None = None
        detail = None
        if kind == "top_k" and len(parts) == 2:
            detail = "top_k needs K"
        elif len(parts) > 3 or (len(parts) == 3 and kind != "top_k"):
            detail = "too many parts"
        elif len(parts) == 3:
            if not (parts[2].isascii() and parts[2].isdigit()):
                detail = f"K must be a whole number from 1 to {_MAX_K}"
            else:
                k = int(parts[2])
        if detail is None:
            detail = _problem(kind, field, k)
        if detail is not None:
            raise AggregateError(f"invalid aggregate {text!r} ({detail}): use {_FORMS}")
        return cls(kind, field, k)

    @property
    def name(self) -> str:
        """The result key: ``count``, ``count_distinct_city``, ``top_k_city``, ``avg_guests``."""
        return self.kind if self.field is None else f"{self.kind}_{self.field}"

    def __str__(self) -> str:
        return ":".join(str(part) for part in (self.kind, self.field, self.k) if part is not None)

    def check(self, field_types: Mapping[str, str]) -> None:
        """Check the aggregate against a signal's fields.

        Args:
            field_types: Field name to type: ``string``, ``int``, ``float``, ``bool`` or
                ``timestamp``.

        Raises:
            AggregateError: When the field is unknown, or ``min``/``max``/``avg``/``sum`` is
                asked of a field that is not int or float.

        Example:
            >>> AggregateSpec.parse("avg:city").check({"city": "string", "guests": "int"})
            Traceback (most recent call last):
            ...
            usp_feast.aggregates.AggregateError: aggregate 'avg:city' needs an int or float ...

        """
        if self.field is None:
            return
        if self.field not in field_types:
            known = ", ".join(sorted(field_types)) or "none"
            raise AggregateError(
                f"aggregate {str(self)!r} uses unknown field {self.field!r}; known fields: {known}"
            )
        actual = field_types[self.field]
        if self.kind in _NUMERIC_KINDS and actual not in _NUMERIC_TYPES:
            raise AggregateError(
                f"aggregate {str(self)!r} needs an int or float field, "
                f"but {self.field!r} is {actual}"
            )


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _values(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    # Every kind but count has a field: AggregateSpec refuses to be built otherwise.
    name = cast(str, spec.field)
    return [v for v in (row.get(name) for row in rows) if not _is_null(v)]


def _numbers(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> list[int | float]:
    values = _values(spec, rows)
    for value in values:
        # bool is an int subclass; True is not a number of guests.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AggregateError(
                f"aggregate {str(spec)!r} found the non-numeric value {value!r} in field "
                f"{spec.field!r}; check the signal's field type"
            )
    return values


def _aggregate(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> Any:
    if spec.kind == "count":
        return len(rows)
    if spec.kind == "count_distinct":
        return len(set(_values(spec, rows)))
    if spec.kind == "top_k":
        counts: dict[Any, int] = {}
        for value in _values(spec, rows):
            counts[value] = counts.get(value, 0) + 1
        # sorted() is stable and dicts keep first-insertion order, so ties keep first appearance.
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        return [[value, count] for value, count in ranked[: spec.k]]
    numbers = _numbers(spec, rows)
    if not numbers:
        return None
    if spec.kind == "min":
        return min(numbers)
    if spec.kind == "max":
        return max(numbers)
    if spec.kind == "sum":
        if all(isinstance(n, int) for n in numbers):
            return sum(numbers)
        return math.fsum(numbers)
    return math.fsum(numbers) / len(numbers)


def aggregate(spec: AggregateSpec, rows: Iterable[Mapping[str, Any]]) -> Any:
    """Compute one aggregate over rows.

    Args:
        spec: The aggregate.
        rows: Signal rows (field name to value); a missing field counts as null.

    Returns:
        An int for ``count`` and ``count_distinct``; a list of ``[value, count]`` pairs for
        ``top_k``, most frequent first with ties in order of first appearance; the value (or
        ``None`` when no non-null value) for ``min``, ``max`` and ``sum``; a float (or ``None``)
        for ``avg``.

    Raises:
        AggregateError: When a numeric aggregate meets a non-numeric value.

    Example:
        >>> rows = [{"city": "Rome"}, {"city": "Oslo"}, {"city": "Oslo"}, {"city": None}]
        >>> aggregate(AggregateSpec.parse("top_k:city:2"), rows)
        [['Oslo', 2], ['Rome', 1]]
        >>> aggregate(AggregateSpec.parse("avg:guests"), rows) is None
        True

    """
    return _aggregate(spec, rows if isinstance(rows, Sequence) else list(rows))


def aggregate_all(
    specs: Iterable[AggregateSpec], rows: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Compute several aggregates over the same rows, keyed by each aggregate's ``name``.

    Raises:
        AggregateError: When two aggregates share a result key (``top_k:city:3`` and
            ``top_k:city:5``), or a numeric aggregate meets a non-numeric value.

    Example:
        >>> rows = [{"guests": 2}, {"guests": 4}]
        >>> specs = [AggregateSpec.parse(t) for t in ("count", "sum:guests", "avg:guests")]
        >>> aggregate_all(specs, iter(rows))
        {'count': 2, 'sum_guests': 6, 'avg_guests': 3.0}

    """
    materialised = rows if isinstance(rows, Sequence) else list(rows)
    results: dict[str, Any] = {}
    seen: dict[str, AggregateSpec] = {}
    for spec in specs:
        if spec.name in seen and seen[spec.name] != spec:
            raise AggregateError(
                f"aggregates {str(seen[spec.name])!r} and {str(spec)!r} share the result key "
                f"{spec.name!r}; ask for only one of them"
            )
        seen[spec.name] = spec
        results[spec.name] = _aggregate(spec, materialised)
    return results
