"""`usp apply`: generate every definition's files, then `feast apply`, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import copy_repo

pytestmark = pytest.mark.integration


def usp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_apply_generates_the_files_then_registers_the_repository(
    tmp_path: Path, redis_url: str
) -> None:
    repo = copy_repo(tmp_path, redis_url, f"apply_{uuid.uuid4().hex[:10]}")
    try:
        result = usp("apply", "--repo", str(repo))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        assert out.index("==> usp generate") < out.index("==> feast apply") < out.index("applied:")
        # Both steps show what they did: the files written, then Feast's own report.
        assert f"wrote     {tmp_path / 'monitoring' / 'prometheus.yml'}" in out
        assert "Applying changes for project" in out  # Feast's own report
        for path in (
            "streaming/search.json",
            "backfill/search.json",
            "monitoring/prometheus/wishlist_enriched.rules.yml",
            "monitoring/grafana/active_trip_planner.json",
            "monitoring/README.md",
            "deploy/kubernetes/flinkdeployment.yaml",
        ):
            assert (tmp_path / path).is_file(), path
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo))
        views = {view.name for view in store.list_stream_feature_views()}
        assert {"search", "wishlist_enriched"} <= views
        # What apply generated is what `generate --check` expects.
        assert usp("generate", "--check", "--repo", str(repo)).returncode == 0
    finally:
        from usp_feast.query import SignalClient

        SignalClient.from_repo(repo).store.drop_project()


def test_apply_reports_a_failing_feast_apply_after_generating(
    tmp_path: Path, redis_url: str
) -> None:
    repo = copy_repo(tmp_path, redis_url, f"apply_{uuid.uuid4().hex[:10]}")
    settings = repo / "feature_store.yaml"
    settings.write_text(settings.read_text().replace("  connection_string:", "  conection:"))
    result = usp("apply", "--repo", str(repo))
    assert result.returncode == 1
    assert "==> usp generate" in result.stdout and "==> feast apply" in result.stdout
    assert (tmp_path / "monitoring" / "prometheus.yml").is_file()
    assert "conection" in result.stdout  # Feast's own message is shown
    assert "feast apply failed (exit 1; its output is above)" in result.stderr


def test_apply_stops_before_feast_when_a_definition_is_wrong(
    tmp_path: Path, redis_url: str
) -> None:
    repo = copy_repo(tmp_path, redis_url, f"apply_{uuid.uuid4().hex[:10]}")
    signal = repo / "signals" / "view.yaml"
    signal.write_text(signal.read_text().replace("retention: ", "retention: forever #"))
    result = usp("apply", "--repo", str(repo))
    assert result.returncode == 1
    assert "==> feast apply" not in result.stdout
    assert "usp generate failed, feast apply not run" in result.stderr
    assert "signals/view.yaml" in result.stderr and "retention" in result.stderr
    assert not (tmp_path / "monitoring").exists()


def test_apply_names_a_folder_that_is_no_feature_repository(tmp_path: Path) -> None:
    result = usp("apply", "--repo", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path} has no feature_store.yaml" in result.stderr
