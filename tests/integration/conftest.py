"""Fixtures shared by integration test modules (a module may define its own of the same name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import serving
from usp_feast import SignalClient


@pytest.fixture(scope="module")
def client(applied_repo: Path) -> SignalClient:
    """A client of the applied example repository."""
    return SignalClient.from_repo(applied_repo)


@pytest.fixture(scope="module")
def api(applied_repo: Path) -> Iterator[str]:
    """`usp serve` on the applied example repository; its base URL."""
    yield from serving(applied_repo)
