"""`usp init` and `usp new` as a user runs them, through validate, generate and `feast apply`.

The project folder gets a unique name, so its derived Feast project name (and with it every
Redis key) is the test's own; the keys are dropped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import feast_apply

pytestmark = pytest.mark.integration


def usp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def ok(*args: str, cwd: Path) -> str:
    result = usp(*args, cwd=cwd)
    assert result.returncode == 0, f"usp {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def test_init_new_validate_generate_and_feast_apply(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # feast and usp (child processes) read the test Redis from the environment: the new
    # feature_store.yaml has no connection_string, as a user's has on a laptop.
    monkeypatch.setenv("USP_REDIS_URL", redis_url)
    token = uuid.uuid4().hex[:8]
    folder = tmp_path / f"Scaffold-{token}"
    project, repo = f"scaffold_{token}", folder / "feature_repo"

    out = ok("init", folder.name, cwd=tmp_path)
    assert f"created {folder.name}/feature_repo/signals/item_view.yaml" in out
    assert f"Feast project {project!r} is ready" in out
    assert "usp validate" in out and "usp query 42 item_view" in out
    assert f"project: {project}\n" in (repo / "feature_store.yaml").read_text()
    assert "definitions OK: 1 signal, 0 segments, 0 sessions" in ok("validate", cwd=folder)

    assert "created feature_repo/signals/add_to_cart.yaml" in ok(
        "new", "signal", "add_to_cart", cwd=folder
    )
    ok("new", "segment", "shoppers", "--signal", "add_to_cart", cwd=folder)
    ok("new", "session", "visit", cwd=folder)
    assert "definitions OK: 2 signals, 1 segment, 1 session" in ok("validate", cwd=folder)

    ok("generate", cwd=folder)
    # Generated artifacts land beside the repository, inside the project folder.
    assert sorted(p.name for p in (folder / "streaming").glob("*.json")) == [
        "add_to_cart.json",
        "item_view.json",
        "segment_shoppers.json",
        "session_visit.json",
    ]
    assert sorted(p.name for p in (folder / "backfill").glob("*.json")) == [
        "add_to_cart.json",
        "item_view.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    assert "up to date" in ok("generate", "--check", cwd=folder)

    feast_apply(repo)
    try:
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo))
        assert store.project == project
        views = {v.name for v in store.list_stream_feature_views()}
        views |= {v.name for v in store.list_feature_views()}
        assert {"item_view", "add_to_cart", "segment_shoppers", "visit"} <= views

        # The new repository serves what is pushed to it, through the versioned store.
        now = datetime.now(UTC)
        store.push(
            "item_view_push",
            pd.DataFrame(
                [
                    {
                        "user_id": 42,
                        "event_id": "v1",
                        "event_ts": now - timedelta(minutes=2),
                        "item_id": "sku-1",
                    },
                    {
                        "user_id": 42,
                        "event_id": "v2",
                        "event_ts": now - timedelta(minutes=1),
                        "item_id": "sku-2",
                    },
                ]
            ),
        )
        lines = ok("query", "42", "item_view", "--json", cwd=folder).splitlines()
        assert [json.loads(line)["item_id"] for line in lines] == ["sku-2", "sku-1"]
    finally:
        from usp_feast.query import SignalClient

        SignalClient.from_repo(repo).store.drop_project()


def test_init_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.md").write_text("mine")

    result = usp("init", "taken", cwd=tmp_path)

    assert result.returncode == 1
    assert f"Error: {Path('taken')} is not empty (it holds notes.md)" in result.stderr
    assert [p.name for p in folder.iterdir()] == ["notes.md"]


def test_new_refuses_bad_and_taken_names_in_one_line(tmp_path: Path) -> None:
    ok("init", "shop", cwd=tmp_path)
    folder = tmp_path / "shop"
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    for args, message in [
        (("signal", "Add-To-Cart"), "'Add-To-Cart' is not a valid signal name"),
        (("session", "item_view"), "signal 'item_view' already exists"),
        (("segment", "buyers", "--signal", "nope"), "unknown signal 'nope'"),
    ]:
        result = usp("new", *args, cwd=folder)
        assert result.returncode == 1, args
        assert result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr

    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
