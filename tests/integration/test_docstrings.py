"""The runnable examples in the public API's docstrings run against the real store."""

from __future__ import annotations

import doctest
from datetime import timedelta
from pathlib import Path

import pytest

import usp_feast.api
import usp_feast.membership
import usp_feast.query
import usp_feast.store

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "module", [usp_feast.store, usp_feast.query, usp_feast.api, usp_feast.membership]
)
def test_examples_run(module, redis_url: str, applied_repo: Path) -> None:
    globs = {"redis_url": redis_url, "repo_path": applied_repo, "timedelta": timedelta}
    result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
