"""Aggregations over signal rows, in one go or incrementally: ``count``, ``top_k:city:3``, ...

Aggregates are written as short texts in query strings and parsed into :class:`AggregateSpec`:

=====================  ==================================================================
``count``              number of rows
``count_distinct:F``   number of distinct non-null values of field ``F``
``top_k:F:K``          the ``K`` (1 to 100) most frequent non-null values of ``F``, as
                       ``[value, count]`` pairs, most frequent first (ties: see below)
``last_k:F:K``         the ``K`` (1 to 100) most recent non-null values of ``F``, newest
                       first; rows of the same time rank by input order, later first
``min:F`` ``max:F``    smallest / largest non-null value of the int or float field ``F``
``avg:F`` ``sum:F``    mean (a float) / total of the non-null values of ``F``
``first_ts``           event time of the earliest row, ISO-8601 UTC text with milliseconds
``last_ts``            event time of the latest row, the same way
``duration``           seconds (a float) from ``first_ts`` to ``last_ts``
=====================  ==================================================================

A missing field counts as null, and so does a float NaN. ``min``, ``max``, ``avg``, ``sum``,
``first_ts``, ``last_ts`` and ``duration`` give ``None`` when there is nothing to aggregate.

Event time is read from a row's ``event_ts`` key, a timezone-aware ``datetime``. ``last_k``,
``first_ts``, ``last_ts`` and ``duration`` need it on every row they use. ``top_k`` ties go to
the value with the most recent occurrence, then to the smaller value (numbers before text), so
the ranking does not depend on the order rows arrive in. Rows without ``event_ts`` (the query
path reads them from the store newest first) rank ties by first appearance instead; an
:class:`Accumulator` counts a missing time as older than any.

:meth:`AggregateSpec.accumulator` gives the incremental form for streaming windows: rows are
added one by one, accumulators of the same aggregate merge (when windows merge), and
:meth:`Accumulator.snapshot` is plain data for job state. Its result equals :func:`aggregate`
over the same rows whatever the order or grouping (``last_k`` ties aside: there, ``a.merge(b)``
counts ``b``'s rows as later). ``count``, ``min``, ``max``, ``sum``, ``avg``, ``first_ts``,
``last_ts`` and ``duration`` keep constant state and ``last_k`` at most ``K`` entries;
``count_distinct`` and ``top_k`` keep every distinct value seen, so they grow with them.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Self, cast

__all__ = [
    "AGGREGATE_KINDS",
    "Accumulator",
    "AggregateError",
    "AggregateSpec",
    "aggregate",
    "aggregate_all",
]

AGGREGATE_KINDS: tuple[str, ...] = (
    "count",
    "count_distinct",
    "top_k",
    "last_k",
    "min",
    "max",
    "avg",
    "sum",
    "first_ts",
    "last_ts",
    "duration",
)
_NO_FIELD_KINDS = frozenset({"count", "first_ts", "last_ts", "duration"})
_K_KINDS = frozenset({"top_k", "last_k"})
_NUMERIC_KINDS = frozenset({"min", "max", "avg", "sum"})
_NUMERIC_TYPES = frozenset({"int", "float"})
_MAX_K = 100
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMS = (
    "count, count_distinct:FIELD, top_k:FIELD:K or last_k:FIELD:K (K from 1 to 100), "
    "min:FIELD, max:FIELD, avg:FIELD, sum:FIELD, first_ts, last_ts or duration"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class AggregateError(ValueError):
    """An aggregate that does not parse, does not fit the signal's fields, or meets bad data."""


def _problem(kind: object, field: object, k: object) -> str | None:
    """What is wrong with an aggregate's parts, or ``None``; shared by the spec and its parser."""
    if kind not in AGGREGATE_KINDS:
        return f"unknown kind {kind!r}"
    if kind in _NO_FIELD_KINDS:
        return None if field is None and k is None else f"{kind} takes no field"
    if not isinstance(field, str) or not _FIELD.match(field):
        return f"{kind} needs a field name"
    if kind not in _K_KINDS:
        return None if k is None else f"{kind} takes no K"
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= _MAX_K:
        return f"K must be a whole number from 1 to {_MAX_K}"
    return None


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregation to compute over a signal's rows.

    Args:
        kind: One of :data:`AGGREGATE_KINDS`.
        field: The field aggregated; required by every kind but ``count``, ``first_ts``,
            ``last_ts`` and ``duration``, which take none.
        k: How many values ``top_k`` or ``last_k`` returns, from 1 to 100; only for those.

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

    def __reduce__(self) -> tuple[Any, ...]:
        return (AggregateSpec, (self.kind, self.field, self.k))

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
        if kind in _K_KINDS and len(parts) == 2:
            detail = f"{kind} needs K"
        elif len(parts) > 3 or (len(parts) == 3 and kind not in _K_KINDS):
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

    def accumulator(self) -> Accumulator:
        """A new, empty incremental form of this aggregate.

        Example:
            >>> acc = AggregateSpec.parse("max:guests").accumulator()
            >>> acc.add({"guests": 2}); acc.add({"guests": 5}); acc.result()
            5

        """
        return _ACCUMULATORS[self.kind](self)

    @property
    def name(self) -> str:
        """The result key: ``count``, ``count_distinct_city``, ``top_k_city``, ``first_ts``."""
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


def _value(spec: AggregateSpec, row: Mapping[str, Any]) -> Any:
    # Every kind that reads a value has a field: AggregateSpec refuses to be built otherwise.
    value = row.get(cast(str, spec.field))
    return None if _is_null(value) else value


def _number(spec: AggregateSpec, row: Mapping[str, Any]) -> int | float | None:
    value = _value(spec, row)
    # bool is an int subclass; True is not a number of guests.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise AggregateError(
            f"aggregate {str(spec)!r} found the non-numeric value {value!r} in field "
            f"{spec.field!r}; check the signal's field type"
        )
    return value


def _event_us(spec: AggregateSpec, row: Mapping[str, Any], required: bool) -> int | None:
    value = row.get("event_ts")
    if value is None and not required:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise AggregateError(
            f"aggregate {str(spec)!r} needs each row's event time under 'event_ts' as a "
            f"timezone-aware datetime, got {value!r}"
        )
    return (value - _EPOCH) // _US


def _value_key(value: Any) -> tuple[int, float, str]:
    # A total order over the values of one field, numbers before text, for stable tie-breaks.
    if isinstance(value, int | float):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _ranked(counts: Mapping[Any, int], newest: Mapping[Any, int | None], k: int) -> list[Any]:
    def key(item: tuple[Any, int]) -> tuple[int, tuple[int, int], tuple[int, float, str]]:
        at = newest.get(item[0])
        return (-item[1], (1, 0) if at is None else (0, -at), _value_key(item[0]))

    return [[value, count] for value, count in sorted(counts.items(), key=key)[:k]]


def _time_result(kind: str, first_us: int | None, last_us: int | None) -> Any:
    if first_us is None or last_us is None:
        return None
    if kind == "duration":
        return (last_us - first_us) / 1_000_000
    moment = _EPOCH + timedelta(microseconds=first_us if kind == "first_ts" else last_us)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _top_k(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    counts: dict[Any, int] = {}
    newest: dict[Any, int | None] = {}
    timed = False
    for row in rows:
        value = _value(spec, row)
        if value is None:
            continue
        at = _event_us(spec, row, required=False)
        timed = timed or at is not None
        counts[value] = counts.get(value, 0) + 1
        seen = newest.get(value)
        newest[value] = at if seen is None or (at is not None and at > seen) else seen
    if timed:
        return _ranked(counts, newest, cast(int, spec.k))
    # Untimed rows come from the store newest first: first appearance is the newest occurrence.
    # sorted() is stable and dicts keep first-insertion order.
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    return [[value, count] for value, count in ranked[: spec.k]]


def _aggregate(spec: AggregateSpec, rows: Sequence[Mapping[str, Any]]) -> Any:
    kind = spec.kind
    if kind == "count":
        return len(rows)
    if kind in ("first_ts", "last_ts", "duration"):
        times = [cast(int, _event_us(spec, row, required=True)) for row in rows]
        return _time_result(kind, min(times, default=None), max(times, default=None))
    if kind == "top_k":
        return _top_k(spec, rows)
    if kind in ("count_distinct", "last_k"):
        present = [(row, value) for row in rows if (value := _value(spec, row)) is not None]
        if kind == "count_distinct":
            return len({value for _, value in present})
        # A stable sort keeps input order among rows of the same time: the later one is newer.
        timed = sorted(
            ((cast(int, _event_us(spec, row, required=True)), value) for row, value in present),
            key=lambda pair: pair[0],
        )
        return [value for _, value in reversed(timed[-cast(int, spec.k) :])]
    numbers = [n for n in (_number(spec, row) for row in rows) if n is not None]
    if not numbers:
        return None
    if kind == "min":
        return min(numbers)
    if kind == "max":
        return max(numbers)
    if kind == "sum":
        if all(isinstance(n, int) for n in numbers):
            return sum(numbers)
        return math.fsum(numbers)
    return math.fsum(numbers) / len(numbers)


def aggregate(spec: AggregateSpec, rows: Iterable[Mapping[str, Any]]) -> Any:
    """Compute one aggregate over rows.

    Args:
        spec: The aggregate.
        rows: Signal rows (field name to value); a missing field counts as null. Event time,
            where used, is the ``event_ts`` key (a timezone-aware ``datetime``).

    Returns:
        An int for ``count`` and ``count_distinct``; a list of ``[value, count]`` pairs for
        ``top_k``, most frequent first; a list of values, newest first, for ``last_k``; the
        value (or ``None`` when no non-null value) for ``min``, ``max`` and ``sum``; a float (or
        ``None``) for ``avg`` and ``duration``; ISO-8601 UTC text (or ``None``) for
        ``first_ts`` and ``last_ts``.

    Raises:
        AggregateError: When a numeric aggregate meets a non-numeric value, or a row lacks the
            event time its aggregate needs.

    Example:
        >>> rows = [{"city": "Rome"}, {"city": "Oslo"}, {"city": "Oslo"}, {"city": None}]
        >>> aggregate(AggregateSpec.parse("top_k:city:2"), rows)
        [['Oslo', 2], ['Rome', 1]]
        >>> aggregate(AggregateSpec.parse("avg:guests"), rows) is None
        True
        >>> timed = [{"event_ts": datetime(2026, 5, 1, 10, m, tzinfo=UTC)} for m in (7, 2)]
        >>> aggregate(AggregateSpec.parse("first_ts"), timed)
        '2026-05-01T10:02:00.000Z'
        >>> aggregate(AggregateSpec.parse("duration"), timed)
        300.0

    """
    return _aggregate(spec, rows if isinstance(rows, Sequence) else list(rows))


def aggregate_all(
    specs: Iterable[AggregateSpec], rows: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Compute several aggregates over the same rows, keyed by each aggregate's ``name``.

    Raises:
        AggregateError: When two aggregates share a result key (``top_k:city:3`` and
            ``top_k:city:5``), or an aggregate meets bad data (see :func:`aggregate`).

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


class Accumulator:
    """The incremental form of one aggregate: add rows, merge, read the result, save the state.

    Made by :meth:`AggregateSpec.accumulator`. :meth:`result` equals :func:`aggregate` over
    every row added here or merged in, whatever their order or grouping (see the module notes
    for the ``last_k`` and untimed ``top_k`` ties).

    Example:
        >>> spec = AggregateSpec.parse("top_k:city:2")
        >>> a, b = spec.accumulator(), spec.accumulator()
        >>> a.add({"city": "Rome"}); a.add({"city": "Oslo"}); b.add({"city": "Oslo"})
        >>> a.merge(b); a.result()
        [['Oslo', 2], ['Rome', 1]]
        >>> Accumulator.restore(spec, a.snapshot()).result()
        [['Oslo', 2], ['Rome', 1]]

    """

    def __init__(self, spec: AggregateSpec) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"Accumulator({str(self.spec)!r}, {self.snapshot()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its plain snapshot: jobs keep accumulators in Flink state, pickled on
        # every update, and this is several times cheaper than the default.
        return (Accumulator.restore, (self.spec, self.snapshot()))

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one row in.

        Raises:
            AggregateError: As :func:`aggregate` does for bad data.

        """
        raise NotImplementedError

    def merge(self, other: Accumulator) -> None:
        """Fold in the rows of ``other``, which is left as it was.

        Raises:
            AggregateError: When ``other`` accumulates a different aggregate.

        """
        if type(other) is not type(self) or other.spec != self.spec:
            raise AggregateError(
                f"cannot merge an accumulator of {str(other.spec)!r} into one of "
                f"{str(self.spec)!r}; merge accumulators of the same aggregate"
            )
        self._merge(cast(Self, other))

    def result(self) -> Any:
        """The aggregate's value over the rows so far, as :func:`aggregate` gives it."""
        raise NotImplementedError

    def snapshot(self) -> Any:
        """The state as plain JSON-able data; :meth:`restore` reads it back."""
        raise NotImplementedError

    @staticmethod
    def restore(spec: AggregateSpec, data: Any) -> Accumulator:
        """The accumulator of ``spec`` saved by :meth:`snapshot`.

        Raises:
            AggregateError: When ``data`` is not a snapshot of an accumulator of ``spec``.

        """
        accumulator = spec.accumulator()
        try:
            accumulator._load(data)
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError):
            raise AggregateError(
                f"cannot restore an accumulator of {str(spec)!r} from {data!r}"
            ) from None
        return accumulator

    def _merge(self, other: Self) -> None:
        raise NotImplementedError

    def _load(self, data: Any) -> None:
        raise NotImplementedError


class _Count(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.rows = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows += 1

    def _merge(self, other: Self) -> None:
        self.rows += other.rows

    def result(self) -> Any:
        return self.rows

    def snapshot(self) -> Any:
        return self.rows

    def _load(self, data: Any) -> None:
        self.rows = int(data)


class _Distinct(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.values: set[Any] = set()

    def add(self, row: Mapping[str, Any]) -> None:
        value = _value(self.spec, row)
        if value is not None:
            self.values.add(value)

    def _merge(self, other: Self) -> None:
        self.values |= other.values

    def result(self) -> Any:
        return len(self.values)

    def snapshot(self) -> Any:
        return sorted(self.values, key=_value_key)

    def _load(self, data: Any) -> None:
        self.values = set(data)


class _TopK(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.counts: dict[Any, int] = {}
        self.newest: dict[Any, int | None] = {}

    def _count(self, value: Any, count: int, at: int | None) -> None:
        self.counts[value] = self.counts.get(value, 0) + count
        seen = self.newest.get(value)
        self.newest[value] = at if seen is None or (at is not None and at > seen) else seen

    def add(self, row: Mapping[str, Any]) -> None:
        value = _value(self.spec, row)
        if value is not None:
            self._count(value, 1, _event_us(self.spec, row, required=False))

    def _merge(self, other: Self) -> None:
        for value, count in other.counts.items():
            self._count(value, count, other.newest[value])

    def result(self) -> Any:
        return _ranked(self.counts, self.newest, cast(int, self.spec.k))

    def snapshot(self) -> Any:
        ordered = sorted(self.counts, key=_value_key)
        return [[value, self.counts[value], self.newest[value]] for value in ordered]

    def _load(self, data: Any) -> None:
        for value, count, at in data:
            self._count(value, int(count), None if at is None else int(at))


class _LastK(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.entries: list[tuple[int, Any]] = []  # oldest first, at most K

    def _keep(self, at: int, value: Any) -> None:
        # insort places an entry after those of the same time: the later arrival is newer.
        bisect.insort(self.entries, (at, value), key=lambda entry: entry[0])
        del self.entries[: -cast(int, self.spec.k)]

    def add(self, row: Mapping[str, Any]) -> None:
        value = _value(self.spec, row)
        if value is not None:
            self._keep(cast(int, _event_us(self.spec, row, required=True)), value)

    def _merge(self, other: Self) -> None:
        for at, value in other.entries:
            self._keep(at, value)

    def result(self) -> Any:
        return [value for _, value in reversed(self.entries)]

    def snapshot(self) -> Any:
        return [[at, value] for at, value in self.entries]

    def _load(self, data: Any) -> None:
        for at, value in data:
            self._keep(int(at), value)


class _Extreme(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.value: int | float | None = None

    def _offer(self, value: int | float | None) -> None:
        if value is None:
            return
        if self.value is None or (
            value < self.value if self.spec.kind == "min" else value > self.value
        ):
            self.value = value

    def add(self, row: Mapping[str, Any]) -> None:
        self._offer(_number(self.spec, row))

    def _merge(self, other: Self) -> None:
        self._offer(other.value)

    def result(self) -> Any:
        return self.value

    def snapshot(self) -> Any:
        return self.value

    def _load(self, data: Any) -> None:
        self._offer(data)


class _Total(Accumulator):
    """``sum`` and ``avg``: an exact rational total, so the result is ``math.fsum``'s."""

    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.numbers = 0
        self.ints: int | None = 0  # the int total while every number is an int
        self.exact = Fraction(0)  # of the numbers as floats, as math.fsum sees them
        self.infinities: set[float] = set()

    def add(self, row: Mapping[str, Any]) -> None:
        number = _number(self.spec, row)
        if number is None:
            return
        self.numbers += 1
        self.ints = (
            self.ints + number if isinstance(number, int) and self.ints is not None else None
        )
        if math.isinf(number):
            self.infinities.add(float(number))
        else:
            self.exact += Fraction(float(number))

    def _merge(self, other: Self) -> None:
        self.numbers += other.numbers
        self.ints = None if self.ints is None or other.ints is None else self.ints + other.ints
        self.exact += other.exact
        self.infinities |= other.infinities

    def result(self) -> Any:
        if not self.numbers:
            return None
        if self.spec.kind == "sum" and self.ints is not None:
            return self.ints
        # Infinities decide the total (or make it an error, +inf with -inf) as in math.fsum.
        total = math.fsum(self.infinities) if self.infinities else float(self.exact)
        return total if self.spec.kind == "sum" else total / self.numbers

    def snapshot(self) -> Any:
        infinities = sorted("inf" if x > 0 else "-inf" for x in self.infinities)
        exact = [self.exact.numerator, self.exact.denominator]
        return [self.numbers, self.ints, exact, infinities]

    def _load(self, data: Any) -> None:
        numbers, ints, (numerator, denominator), infinities = data
        self.numbers, self.ints = int(numbers), None if ints is None else int(ints)
        self.exact = Fraction(int(numerator), int(denominator))
        self.infinities = {float(x) for x in infinities}


class _Times(Accumulator):
    def __init__(self, spec: AggregateSpec) -> None:
        super().__init__(spec)
        self.first: int | None = None
        self.last: int | None = None

    def _span(self, first: int | None, last: int | None) -> None:
        if first is not None and last is not None:
            self.first = first if self.first is None else min(self.first, first)
            self.last = last if self.last is None else max(self.last, last)

    def add(self, row: Mapping[str, Any]) -> None:
        at = _event_us(self.spec, row, required=True)
        self._span(at, at)

    def _merge(self, other: Self) -> None:
        self._span(other.first, other.last)

    def result(self) -> Any:
        return _time_result(self.spec.kind, self.first, self.last)

    def snapshot(self) -> Any:
        return [self.first, self.last]

    def _load(self, data: Any) -> None:
        first, last = data
        self._span(None if first is None else int(first), None if last is None else int(last))


_ACCUMULATORS: dict[str, type[Accumulator]] = {
    "count": _Count,
    "count_distinct": _Distinct,
    "top_k": _TopK,
    "last_k": _LastK,
    "min": _Extreme,
    "max": _Extreme,
    "avg": _Total,
    "sum": _Total,
    "first_ts": _Times,
    "last_ts": _Times,
    "duration": _Times,
}
