"""Generated job configs: deterministic, complete, and checked for staleness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from usp_feast.cli import main
from usp_feast.definitions import load_definitions
from usp_feast.jobs import (
    JoinJobConfig,
    SegmentJobConfig,
    SessionJobConfig,
    SignalInput,
    SignalJobConfig,
    config_file,
    load_job_config,
    parse_job_config,
    render_backfill_configs,
    render_job_configs,
    session_job_config,
)
from usp_feast.runner import write_prefixed_configs

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_configs_name_the_topics_of_each_signal() -> None:
    rendered = render_job_configs(load_definitions(ROOT / "feature_repo"))
    assert sorted(rendered) == [
        "booking.json",
        "join_wishlist_enriched.json",
        "search.json",
        "segment_active_trip_planner.json",
        "session_browse_session.json",
        "session_views_10m.json",
        "view.json",
        "wishlist.json",
    ]
    search = SignalJobConfig.model_validate_json(rendered["search.json"])
    assert (search.source_topic, search.signal_topic, search.dead_letter_topic) == (
        "events.search",
        "usp.signal.search",
        "usp.dlq.search",
    )
    assert search.suite == "search.json"
    assert "bootstrap" not in rendered["search.json"]  # endpoints come from the environment
    join = JoinJobConfig.model_validate_json(rendered["join_wishlist_enriched.json"])
    assert (join.left_topic, join.right_topic, join.late_topic) == (
        "events.wishlist_add",
        "events.listing_update",
        "usp.late.join.wishlist_enriched",
    )
    assert (join.left_suite, join.right_suite) == ("wishlist_add.json", "listing_update.json")
    assert join.state_backend == "rocksdb" and join.watermark_out_of_orderness_ms == 2_000


def test_a_segment_config_names_its_input_and_output_topics() -> None:
    rendered = render_job_configs(load_definitions(ROOT / "feature_repo"))
    config = parse_job_config(rendered["segment_active_trip_planner.json"])
    assert isinstance(config, SegmentJobConfig)
    assert [(i.signal, i.topic) for i in config.inputs] == [
        ("search", "usp.signal.search"),
        ("booking", "usp.signal.booking"),
    ]
    assert (config.segment_topic, config.late_topic) == (
        "usp.segment.active_trip_planner",
        "usp.late.segment.active_trip_planner",
    )


def test_rendering_is_deterministic_and_matches_the_checked_in_files() -> None:
    definitions = load_definitions(ROOT / "feature_repo")
    assert render_job_configs(definitions) == render_job_configs(definitions)
    for name, text in render_job_configs(definitions).items():
        assert (ROOT / "streaming" / name).read_text() == text, f"streaming/{name} is stale"
    backfills = render_backfill_configs(definitions)
    assert sorted(backfills) == sorted(p.name for p in (ROOT / "backfill").glob("*.json"))
    for name, text in backfills.items():
        assert (ROOT / "backfill" / name).read_text() == text, f"backfill/{name} is stale"


def test_generate_check_fails_on_a_stale_file_and_generate_fixes_it(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("data")
    )
    shutil.copytree(ROOT / "validation", tmp_path / "validation")
    args = ["--repo", str(tmp_path / "feature_repo"), "--streaming", str(tmp_path / "streaming")]
    runner = CliRunner()
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert runner.invoke(main, ["generate", "--check", *args]).exit_code == 0
    config = tmp_path / "streaming" / "view.json"
    data = json.loads(config.read_text())
    data["batch_max_rows"] = 1
    config.write_text(json.dumps(data))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1
    assert "view.json" in stale.output and "usp generate" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert runner.invoke(main, ["generate", "--check", *args]).exit_code == 0
    # Backfill configs (beside the repository) are checked the same way.
    backfill = tmp_path / "backfill" / "search.json"
    backfill.write_text(backfill.read_text().replace("50000", "7"))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1 and "backfill/search.json" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert json.loads(backfill.read_text())["batch_rows"] == 50_000


def test_a_session_config_names_its_input_and_output_topics() -> None:
    definitions = load_definitions(ROOT / "feature_repo")
    spec = definitions.session("browse_session")
    assert config_file(spec) == "session_browse_session.json"
    rendered = render_job_configs(definitions)[config_file(spec)]
    config = parse_job_config(rendered)
    assert isinstance(config, SessionJobConfig)
    assert config == session_job_config(spec, definitions)
    assert (config.kind, config.session, config.name) == (
        "session",
        "browse_session",
        "session_browse_session",
    )
    assert config.inputs == (
        SignalInput(signal="search", topic="usp.signal.search"),
        SignalInput(signal="view", topic="usp.signal.view"),
    )
    assert (config.session_topic, config.late_topic, config.consumer_group) == (
        "usp.session.browse_session",
        "usp.late.session.browse_session",
        "usp.session.browse_session",
    )
    assert (config.watermark_out_of_orderness_ms, config.idle_advance_ms) == (5_000, 2_000)
    assert load_job_config(ROOT / "streaming" / "session_views_10m.json") == session_job_config(
        definitions.session("views_10m"), definitions
    )


def test_prefixed_configs_rename_a_session_job_s_topics(tmp_path: Path) -> None:
    topics = write_prefixed_configs(load_definitions(ROOT / "feature_repo"), tmp_path, "t1.")
    config = load_job_config(tmp_path / "session_views_10m.json")
    assert isinstance(config, SessionJobConfig)
    assert (config.session_topic, config.late_topic, config.consumer_group) == (
        "t1.usp.session.views_10m",
        "t1.usp.late.session.views_10m",
        "t1.usp.session.views_10m",
    )
    assert [i.topic for i in config.inputs] == ["t1.usp.signal.view"]
    assert {"t1.usp.session.views_10m", "t1.usp.late.session.views_10m"} <= set(topics)
