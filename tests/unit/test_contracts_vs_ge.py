"""Differential test: compiled contracts agree with Great Expectations, event by event.

For every suite in ``validation/`` (plus ``OPTIONS_SUITE`` below, which exercises the options the
shipped suites do not use), hypothesis generates batches of good and bad events; each batch is
validated by GE 1.24.1 and by the compiled contract, and for every event the test asserts the
same verdict and the same set of failed ``(expectation type, column)`` pairs.

How a list of events becomes GE's view of it (the mapping ``usp_feast.contracts`` documents):

* **Value expectations** run on one pandas DataFrame: one row per event; columns are every
  column the suite mentions plus every key any event carries, each built with ``dtype=object``
  so values keep their Python types; a key an event lacks is None in its row.
  ``result_format="COMPLETE"`` gives ``unexpected_index_list``, the failing rows.
* **Table expectations** (``expect_table_columns_to_match_set``) are about an event's own keys:
  each event is validated as a one-row DataFrame whose columns are exactly its keys. The verdict
  depends on the key set alone, so it is cached per key set.
* **Where GE raises** for an expectation (``between`` on a string or a list: ``TypeError``), the
  expectation fails for the whole batch and GE names no rows. The contract's documented choice
  is that such a value fails that expectation for its own event only. The test recovers GE's
  per-row truth by validating that expectation alone: on the rows the contract passes (GE must
  then neither raise nor report a row), and on the rows it fails; if that raises too, those rows
  are validated one by one (cached by value, as a value expectation's verdict depends on the
  value alone), and a row on which GE raises counts as failing.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usp_feast.contracts import Contract

pytestmark = [
    pytest.mark.unit,
    # GE's regex metric warns about match groups (the event_ts pattern has some); harmless.
    pytest.mark.filterwarnings("ignore:This pattern is interpreted as a regular expression"),
]
# Examples per suite; ~45 s in all with the default. Raise it for a deeper run, e.g.
# USP_DIFFERENTIAL_EXAMPLES=200 .venv/bin/pytest tests/unit/test_contracts_vs_ge.py
EXAMPLES = int(os.environ.get("USP_DIFFERENTIAL_EXAMPLES", "20"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SUITE_FILES = sorted((ROOT / "validation").glob("*.json"))

TABLE = "expect_table_columns_to_match_set"
NOT_NULL = "expect_column_values_to_not_be_null"
OF_TYPE = "expect_column_values_to_be_of_type"
IN_TYPES = "expect_column_values_to_be_in_type_list"
IN_SET = "expect_column_values_to_be_in_set"
BETWEEN = "expect_column_values_to_be_between"
REGEX = "expect_column_values_to_match_regex"
LENGTHS = "expect_column_value_lengths_to_be_between"

Key = tuple[str, str | None]  # (expectation type, column)

# COMPLETE gives every failing row in unexpected_index_list. Leaving the unexpected values out
# avoids a GE result-formatting crash that has nothing to do with the rows' verdicts: when the
# first unexpected value is a dict, _format_map_output (expectations/expectation.py) takes every
# unexpected value for a dict and raises AttributeError on the others.
RESULT_FORMAT = {"result_format": "COMPLETE", "exclude_unexpected_values": True}

# The options the shipped suites leave out: exact column match, strict and one-sided bounds,
# numpy type names, a mixed-type value set, an unanchored regex, bool and object types.
OPTIONS_SUITE: dict[str, Any] = {
    "name": "options",
    "expectations": [
        {"type": TABLE, "kwargs": {"column_set": ["a", "b", "c", "d", "e", "f"]}},
        {
            "type": BETWEEN,
            "kwargs": {
                "column": "a",
                "min_value": 0.0,
                "max_value": 10.0,
                "strict_min": True,
                "strict_max": True,
            },
        },
        {"type": OF_TYPE, "kwargs": {"column": "a", "type_": "float"}},
        {"type": BETWEEN, "kwargs": {"column": "b", "max_value": 3.5}},
        {"type": IN_TYPES, "kwargs": {"column": "b", "type_list": ["int64", "bool"]}},
        {"type": IN_SET, "kwargs": {"column": "c", "value_set": [1, 2.5, "x", True]}},
        {
            "type": LENGTHS,
            "kwargs": {"column": "d", "min_value": 2, "max_value": 5, "strict_min": True},
        },
        {"type": REGEX, "kwargs": {"column": "d", "regex": "[a-z]+\\d?"}},
        {"type": OF_TYPE, "kwargs": {"column": "e", "type_": "bool"}},
        {"type": OF_TYPE, "kwargs": {"column": "f", "type_": "object"}},
        {"type": LENGTHS, "kwargs": {"column": "f", "max_value": 4, "strict_max": True}},
    ],
}

SUITES: list[tuple[str, dict[str, Any]]] = [
    *((path.name, json.loads(path.read_text())) for path in SUITE_FILES),
    ("OPTIONS_SUITE", OPTIONS_SUITE),
]

# Values of the wrong kind for any field: nulls, booleans, floats where ints go, numbers where
# strings go, containers, long and non-ASCII text, numpy scalars (a backfill may read those).
ODD_VALUES: list[Any] = [
    None,
    float("nan"),
    True,
    False,
    0,
    -1,
    1,
    2.0,
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    2**63,
    2**70,
    -(2**70),
    "",
    " ",
    "5",
    "1.5",
    "true",
    "null",
    "é",
    "👍",
    "٣",
    "a\nb",
    [1],
    [],
    {"a": 1},
    {},
    "x" * 300,
    "é" * 129,
    "👍" * 201,
    np.int64(3),
    np.float64(2.5),
    np.bool_(True),
    np.float64("nan"),
    np.str_("x"),
    np.int32(7),
]
EXTRA_FIELDS = ["utm_source", "session_id", "debug", "v"]

MUTATIONS: list[Callable[[str], str]] = [
    lambda s: s + "\n",
    lambda s: " " + s,
    lambda s: s[:-1],
    lambda s: s + "x",
    lambda s: s.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
    lambda s: s.replace("-", "/"),
]


def _profile(suite: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per column, the kwargs of each expectation on it."""
    columns: dict[str, dict[str, dict[str, Any]]] = {}
    for exp in suite["expectations"]:
        if exp["type"] == TABLE:
            for column in exp["kwargs"]["column_set"]:
                columns.setdefault(column, {})
        else:
            columns.setdefault(exp["kwargs"]["column"], {})[exp["type"]] = exp["kwargs"]
    return columns


def _good(spec: dict[str, dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Values meant to satisfy every expectation on a column."""
    if IN_SET in spec:
        return st.sampled_from(spec[IN_SET]["value_set"])
    if REGEX in spec:  # lengths may still fail now and then: the comparison is exact anyway
        return st.from_regex(spec[REGEX]["regex"], fullmatch=True)
    types = set()
    if OF_TYPE in spec:
        types.add(spec[OF_TYPE]["type_"])
    if IN_TYPES in spec:
        types.update(spec[IN_TYPES]["type_list"])
    bounds = spec.get(BETWEEN, {})
    low, high = bounds.get("min_value"), bounds.get("max_value")
    options: list[st.SearchStrategy[Any]] = []
    if types & {"int", "int64"}:
        ints = st.integers(
            min_value=-(2**63) if low is None else math.floor(low) + 1,
            max_value=2**63 - 1 if high is None else math.ceil(high) - 1,
        )
        options.append(ints.map(np.int64) if "int" not in types else ints)
    if "float" in types:
        options.append(
            st.floats(
                min_value=low,
                max_value=high,
                exclude_min=low is not None,
                exclude_max=high is not None,
                allow_nan=False,
            )
        )
    if "bool" in types:
        options.append(st.booleans())
    if LENGTHS in spec:
        lengths = spec[LENGTHS]
        size_low = (lengths.get("min_value") or 0) + 1
        size_high = min((lengths.get("max_value") or 40) - 1, 40)
        options.append(st.text(min_size=size_low, max_size=size_high))
    elif "str" in types:
        options.append(st.text(max_size=20))
    return st.one_of(options) if options else st.sampled_from(ODD_VALUES)


def _edges(spec: dict[str, dict[str, Any]]) -> list[Any]:
    """Values on and around the column's limits."""
    edges: list[Any] = []
    bounds = spec.get(BETWEEN, {})
    for bound in (bounds.get("min_value"), bounds.get("max_value")):
        if bound is not None:
            whole = int(bound)
            edges += [bound, whole, whole - 1, whole + 1, bound - 0.5, bound + 0.5]
            edges += [math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
            edges += [str(whole), [whole], np.int64(whole), np.float64(bound)]
    lengths = spec.get(LENGTHS, {})
    for size in (lengths.get("min_value"), lengths.get("max_value")):
        if size is not None:
            edges += [
                "x" * max(size - 1, 0),
                "é" * size,
                "👍" * (size + 1),
                int("9" * max(size, 1)),
            ]
    for member in spec.get(IN_SET, {}).get("value_set", []):
        edges += [member, [member], str(member)]
        if isinstance(member, str):
            edges += [member.upper(), member + " ", member + "\n"]
    return edges


def _bad(spec: dict[str, dict[str, Any]]) -> st.SearchStrategy[Any]:
    # Weighted by repetition; random text is rarer because, where GE raises on strings, every
    # new string costs GE validations of its own (see GreatExpectations.failing_rows).
    options: list[st.SearchStrategy[Any]] = [
        *[st.sampled_from(ODD_VALUES)] * 3,
        st.text(max_size=12),
        st.integers(),
        st.floats(),
        st.lists(st.integers(0, 9), max_size=2),
    ]
    edges = _edges(spec)
    if edges:
        options += [st.sampled_from(edges)] * 3
    if REGEX in spec:
        mutated = st.tuples(st.from_regex(spec[REGEX]["regex"]), st.sampled_from(MUTATIONS))
        options += [mutated.map(lambda pair: pair[1](pair[0]))] * 2
    return st.one_of(options)


@st.composite
def _event(draw: st.DrawFn, fields: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    clean = draw(st.integers(0, 3)) == 0
    event: dict[str, Any] = {}
    for column, (good, bad) in fields.items():
        roll = 0 if clean else draw(st.integers(0, 99))
        if roll < 80:
            event[column] = draw(good)
        elif roll < 95:
            event[column] = draw(bad)
        # else: the key is missing
    extra = st.one_of(st.sampled_from(ODD_VALUES), st.text(max_size=5))
    event.update(draw(st.dictionaries(st.sampled_from(EXTRA_FIELDS), extra, max_size=2)))
    return event


def _batches(suite: dict[str, Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    fields = {column: (_good(spec), _bad(spec)) for column, spec in _profile(suite).items()}
    return st.lists(_event(fields), min_size=20, max_size=50)


# --- Great Expectations side ------------------------------------------------------------------


def _frame(events: list[dict[str, Any]], columns: list[str]) -> Any:
    """The all-object DataFrame of a list of events (missing keys are None)."""
    names = list(dict.fromkeys([*columns, *(k for event in events for k in event)]))
    return pd.DataFrame(
        {name: pd.Series([event.get(name) for event in events], dtype=object) for name in names}
    )


def _raised(result: Any) -> bool:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return True
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


class GreatExpectations:
    """One ephemeral GE context, reused for every batch (building one is the slow part)."""

    def __init__(self, gx: Any) -> None:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("events").add_dataframe_asset("batch")
        self._batches = asset.add_batch_definition_whole_dataframe("whole")
        self._suites: dict[Any, Any] = {}
        self._table_cache: dict[tuple[str, frozenset[str]], bool] = {}
        self._value_cache: dict[tuple[str, Key, str, str], bool] = {}
        self.validations = 0

    def _suite(self, cache_key: Any, expectations: list[dict[str, Any]]) -> Any:
        if cache_key not in self._suites:
            self._suites[cache_key] = self._gx.ExpectationSuite(
                name="differential", expectations=copy.deepcopy(expectations)
            )
        return self._suites[cache_key]

    def validate(
        self, cache_key: Any, expectations: list[dict[str, Any]], frame: Any
    ) -> dict[Key, tuple[bool, bool, set[int]]]:
        """Per expectation: (success, raised, failing row positions)."""
        suite = self._suite(cache_key, expectations)
        batch = self._batches.get_batch(batch_parameters={"dataframe": frame})
        self.validations += 1
        out: dict[Key, tuple[bool, bool, set[int]]] = {}
        for result in batch.validate(suite, result_format=RESULT_FORMAT).results:
            config = result.expectation_config
            key = (config.type, config.kwargs.get("column"))
            rows = set(result.result.get("unexpected_index_list") or [])
            out[key] = (bool(result.success), _raised(result), rows)
        return out

    def table_fails(self, suite: str, exp: dict[str, Any], event: dict[str, Any]) -> bool:
        """The table expectation on the one-row batch of this event's own keys."""
        key: Key = (exp["type"], None)
        cache_key = (suite, frozenset(event))
        if cache_key not in self._table_cache:
            frame = pd.DataFrame({k: pd.Series([v], dtype=object) for k, v in event.items()})
            success, raised, _ = self.validate((suite, key), [exp], frame)[key]
            assert not raised, f"GE raised on the table expectation for keys {sorted(event)}"
            self._table_cache[cache_key] = not success
        return self._table_cache[cache_key]

    def value_fails(self, suite: str, exp: dict[str, Any], value: Any) -> bool:
        """One value expectation on a one-row batch; raising counts as failing."""
        column = exp["kwargs"]["column"]
        key: Key = (exp["type"], column)
        cache_key = (suite, key, type(value).__qualname__, repr(value))
        if cache_key not in self._value_cache:
            frame = _frame([{column: value}], [column])
            success, raised, _ = self.validate((suite, key), [exp], frame)[key]
            self._value_cache[cache_key] = raised or not success
        return self._value_cache[cache_key]


@pytest.fixture(scope="module")
def great_expectations() -> GreatExpectations:
    # Imported here, not at collection: importing GE takes seconds. It is a pinned requirement,
    # so a missing GE fails the test instead of skipping it.
    import great_expectations as gx

    return GreatExpectations(gx)


def _resolve_raised(
    ge: GreatExpectations,
    name: str,
    exps: list[dict[str, Any]],
    events: list[dict[str, Any]],
    compiled: list[set[Key]],
) -> dict[Key, set[int]]:
    """Failing rows of expectations GE raised on for the whole batch (module docstring).

    Two batches cover every raised expectation at once: the rows each one passes in the
    contract, and the rows it fails there; values outside the half under test become None,
    which value expectations skip. Where GE raises again, rows are validated one by one.
    """
    keys: list[Key] = [(exp["type"], exp["kwargs"]["column"]) for exp in exps]
    columns = [column for _, column in keys]
    assert len(set(columns)) == len(columns), "a group must not repeat a column"
    flagged = {key: {i for i in range(len(events)) if key in compiled[i]} for key in keys}
    failing: dict[Key, set[int]] = {key: set() for key in keys}
    for want_flagged in (False, True):
        positions = [
            i
            for i in range(len(events))
            if any((i in flagged[key]) == want_flagged for key in keys)
        ]
        if not positions:
            continue
        rows = [
            {
                key[1]: events[i].get(key[1]) if (i in flagged[key]) == want_flagged else None
                for key in keys
            }
            for i in positions
        ]
        results = ge.validate((name, tuple(keys)), exps, _frame(rows, columns))
        for key, exp in zip(keys, exps, strict=True):
            _, raised, unexpected = results[key]
            if not raised:
                failing[key] |= {positions[j] for j in unexpected}
                continue
            for i in positions:
                value = events[i].get(key[1])
                if (i in flagged[key]) == want_flagged and value is not None:
                    if ge.value_fails(name, exp, value):
                        failing[key].add(i)
    return failing


def _ge_failures(
    ge: GreatExpectations,
    name: str,
    suite: dict[str, Any],
    contract: Contract,
    events: list[dict[str, Any]],
    compiled: list[set[Key]],
) -> list[set[Key]]:
    """GE's failed (type, column) pairs per event, mapped as the module docstring says."""
    failures: list[set[Key]] = [set() for _ in events]
    values = [exp for exp in suite["expectations"] if exp["type"] != TABLE]
    by_key = {(exp["type"], exp["kwargs"]["column"]): exp for exp in values}
    results = ge.validate(name, values, _frame(events, list(contract.columns)))
    assert set(results) == set(by_key), "GE returned results for other expectations"
    raised = [by_key[key] for key, (_, was_raised, _) in results.items() if was_raised]
    groups: list[list[dict[str, Any]]] = []  # no two expectations of a group share a column
    for exp in raised:
        column = exp["kwargs"]["column"]
        group = next((g for g in groups if all(e["kwargs"]["column"] != column for e in g)), None)
        if group is None:
            groups.append(group := [])
        group.append(exp)
    for key, (success, was_raised, rows) in results.items():
        assert was_raised or success or rows, f"GE failed {key} without naming rows"
        if not was_raised:
            for i in rows:
                failures[i].add(key)
    for group in groups:
        for key, rows in _resolve_raised(ge, name, group, events, compiled).items():
            for i in rows:
                failures[i].add(key)
    for exp in suite["expectations"]:
        if exp["type"] == TABLE:
            for i, event in enumerate(events):
                if ge.table_fails(name, exp, event):
                    failures[i].add((TABLE, None))
    return failures


def test_suite_keys_are_unique() -> None:
    # Results are matched to expectations by (type, column); the comparison needs that unique.
    for name, suite in SUITES:
        keys = [(e["type"], e["kwargs"].get("column")) for e in suite["expectations"]]
        assert len(keys) == len(set(keys)), name


@pytest.mark.parametrize(("name", "suite"), SUITES, ids=[name for name, _ in SUITES])
def test_compiled_contract_agrees_with_great_expectations(
    great_expectations: GreatExpectations, name: str, suite: dict[str, Any]
) -> None:
    contract = Contract.from_dict(suite, source=name)
    seen = {"rows": 0, "invalid": 0, "valid": 0}
    started = time.perf_counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(events=_batches(suite))
    def agree(events: list[dict[str, Any]]) -> None:
        violations = [contract.check(event) for event in events]
        compiled = [{(v.expectation, v.column) for v in found} for found in violations]
        expected = _ge_failures(great_expectations, name, suite, contract, events, compiled)
        mismatches = [
            f"row {i}: {events[i]!r}\n  GE fails {sorted(expected[i], key=str)}\n"
            f"  contract fails {sorted(compiled[i], key=str)}"
            for i in range(len(events))
            if expected[i] != compiled[i]
        ]
        assert not mismatches, "\n".join(mismatches)
        seen["rows"] += len(events)
        seen["invalid"] += sum(1 for found in compiled if found)
        seen["valid"] += sum(1 for found in compiled if not found)

    agree()
    # The generators must really produce both kinds of events, or the agreement means little.
    assert seen["valid"] > 0 and seen["invalid"] > 0, seen
    print(
        f"{name}: {seen} in {time.perf_counter() - started:.1f}s, "
        f"{great_expectations.validations} GE validations so far"
    )
