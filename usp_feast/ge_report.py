"""A Great Expectations HTML validation report for a batch of raw events (backfill output).

Per-event verdicts come from :mod:`usp_feast.contracts` (the same suite compiled to per-event
checks, with GE's semantics); this runs Great Expectations itself on the batch, so the report a
data engineer opens is GE's own rendering of GE's own result. Events become a DataFrame whose
columns all have ``dtype=object`` (values keep their Python types, a missing key is a null),
the framing :mod:`usp_feast.contracts` documents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SuiteReport", "validate_events"]


@dataclass(frozen=True)
class SuiteReport:
    """GE's verdict on a batch: overall success, per-expectation failures, and the HTML page."""

    success: bool
    evaluated: int
    failed_expectations: int
    html: str


def validate_events(
    suite_path: Path, events: Sequence[Mapping[str, Any]], title: str
) -> SuiteReport:
    """Validate ``events`` against the suite with Great Expectations and render the result.

    Args:
        suite_path: The suite JSON (``validation/<event_type>.json``).
        events: The events that parsed as JSON objects.
        title: Names the batch in the report (the backfill unit).
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    stored = json.loads(suite_path.read_text())
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add(
        ExpectationSuite(name=stored["name"], expectations=stored.get("expectations", []))
    )
    asset = context.data_sources.add_pandas("history").add_dataframe_asset(title)
    frame = pd.DataFrame.from_records(list(events)).astype(object)
    batch = asset.add_batch_definition_whole_dataframe("unit").get_batch(
        batch_parameters={"dataframe": frame}
    )
    result = batch.validate(suite, result_format="SUMMARY")
    failed = sum(1 for r in result.results if not r.success)
    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    return SuiteReport(
        success=bool(result.success), evaluated=len(frame), failed_expectations=failed, html=html
    )
