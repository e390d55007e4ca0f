"""The examples in the pure modules' docstrings run and show what they claim."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("module_name", "has_examples"),
    [
        ("usp_feast.durations", True),
        ("usp_feast.keys", True),
        ("usp_feast.spec", True),
        ("usp_feast.transforms", True),
        ("usp_feast.contracts", True),
        ("usp_feast.pipeline", True),
        ("usp_feast.sessions", True),
        ("usp_feast.segments", True),
        ("usp_feast.offline", True),
        ("usp_feast.raw_history", True),
        ("usp_feast.backfill", True),
        ("usp_feast.reconcile", True),
        ("usp_feast.windows", True),
        ("usp_feast.aggregates", True),
        ("usp_feast.filters", True),
        ("usp_feast.feast_sink", True),
        ("usp_feast.joins", True),
        ("usp_feast.traffic", True),
        ("usp_feast.metric_names", True),
        ("usp_feast.monitoring", True),
        ("usp_feast.monitoring_checks", True),
        ("usp_feast.job_metrics", True),
        ("usp_feast.job_status", True),
        ("usp_feast.scaffold", True),
        ("usp_feast.api_access", True),
        ("usp_feast.connections", True),
        # Documents its format in prose; no runnable example yet.
        ("usp_feast.versions", False),
    ],
)
def test_docstring_examples_pass(module_name: str, has_examples: bool, tmp_path: Path) -> None:
    module = importlib.import_module(module_name)

    result = doctest.testmod(module, extraglobs={"tmp": tmp_path}, optionflags=doctest.ELLIPSIS)

    assert result.failed == 0
    if has_examples:
        assert result.attempted > 0
