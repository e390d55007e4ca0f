"""The signals explorer end to end, in a real browser, over a real pipeline.

One Flink job runs the ``search`` and ``view`` signals, the session engagement
``browse_session`` and the segment ``active_trip_planner``; raw events go through the broker,
`usp serve` serves the API and the explorer, and headless Chromium (Debian's ``chromium``,
driven by Playwright; scripts/setup.sh installs both) shows them the way an engineer sees them.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import serving
from tests.e2e.harness import JOB_START_TIMEOUT, Job, ts, wait_for, workspace
from tests.e2e.test_session_jobs import produce, search, view
from usp_feast import SignalClient
from usp_feast.definitions import load_definitions
from usp_feast.jobs import load_job_config
from usp_feast.metric_names import job_name, job_part
from usp_feast.spec import JoinSignalSpec

pytestmark = pytest.mark.e2e

CONFIGS = ("search", "view", "session_browse_session", "segment_active_trip_planner")
USER = 951
NOBODY = 952  # a well-formed id nothing was produced for
UI_TIMEOUT_MS = 20_000
A_RATE = re.compile(r"^\d+\.\d$")  # events/s as the page shows it


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict[str, Any]]:
    space = workspace(tmp_path_factory.mktemp("e2e_explorer"), stack.kafka, stack.redis, "exp")
    root, repo, prefix, streaming = space.root, space.repo, space.prefix, space.streaming
    configs = [streaming / f"{name}.json" for name in CONFIGS]
    job = Job(repo, configs, root / "checkpoints", root / "job.log")
    job.start()
    client = SignalClient.from_repo(repo)
    loaded = [load_job_config(path) for path in configs]
    yield {
        "repo": repo,
        "prefix": prefix,
        "job": job,
        "job_name": job_name(job_part(c.kind, c.definition) for c in loaded),
        "client": client,
        "kafka": stack.kafka,
    }
    job.stop()
    client.store.drop_project()


@pytest.fixture(scope="module")
def journey(pipeline: dict[str, Any]) -> dict[str, Any]:
    """User 951 searched and viewed two listings; one view was replayed (two versions)."""
    client, job = pipeline["client"], pipeline["job"]
    first_view = view(USER, "v-1", ts(2), "Lisbon", 11)
    produce(
        pipeline,
        search(USER, "s-1", ts(3), "Lisbon"),
        first_view,
        view(USER, "v-2", ts(1), "Porto", 12),
    )
    wait_for(
        lambda: len(client.recent(USER, "view")) == 2 and len(client.recent(USER, "search")) == 1,
        job,
        JOB_START_TIMEOUT,
        "user 951's events in the store",
    )
    produce(pipeline, first_view)  # a replay: a second version of v-1
    wait_for(
        lambda: {e.event_id: e.versions for e in client.recent(USER, "view")}["v-1"] == 2,
        job,
        60,
        "the replayed view's second version",
    )
    wait_for(
        lambda: (
            client.session(USER, "browse_session").current is not None
            and client.in_segment(USER, "active_trip_planner")
        ),
        job,
        60,
        "user 951's session and segment membership",
    )
    return {"client": client}


@pytest.fixture(scope="module")
def api(pipeline: dict[str, Any]) -> Iterator[str]:
    yield from serving(pipeline["repo"])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = os.environ.get("USP_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed; run scripts/setup.sh, which installs it")
    with sync_playwright() as playwright:
        # Debian's build, never a downloaded one (`playwright install` is not used here).
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; any script error on it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    # A refused request (the bad id below) logs a console error for the failed fetch; only
    # script errors and anything else are defects.
    assert [e for e in errors if "status of 4" not in e] == []


def look_up(page: Page, api: str, user: str) -> None:
    page.goto(f"{api}/")  # the root leads to the explorer
    page.get_by_test_id("user-id").fill(user)
    page.get_by_test_id("show").click()


def test_the_timeline_shows_the_users_real_events_sessions_and_segments(
    page: Page, api: str, journey: dict[str, Any], tmp_path: Path
) -> None:
    client: SignalClient = journey["client"]
    look_up(page, api, str(USER))
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "found")

    # Every signal has its section, join signals included, in the definitions' order.
    sections = page.locator("[data-testid^='signal-'][data-signal]")
    specs = [client.spec(name) for name in client.signals]
    joins = [s.name for s in specs if isinstance(s, JoinSignalSpec)]
    assert joins == ["wishlist_enriched"]
    assert sections.evaluate_all("s => s.map(e => e.dataset.signal)") == [
        *(s.name for s in specs if not isinstance(s, JoinSignalSpec)),
        *joins,
    ]
    expect(page.get_by_test_id("signal-wishlist_enriched")).to_contain_text("No events")

    # Each signal's rows are exactly what the store serves: ids, times, versions, values.
    keys = ("event_id", "event_ts", "processed_at", "versions", "city")
    for signal in ("search", "view"):
        expected = [{k: e.to_dict()[k] for k in keys} for e in client.recent(USER, signal)]
        rows = page.get_by_test_id(f"signal-{signal}").get_by_test_id("event-row")
        expect(rows).to_have_count(len(expected))
        shown = [
            {
                "event_id": row.get_by_test_id("event-id").inner_text(),
                "event_ts": row.get_by_test_id("event-time").inner_text(),
                "processed_at": row.get_by_test_id("processed-at").inner_text(),
                "versions": int(row.get_by_test_id("versions").inner_text()),
                "city": row.locator("[data-field='city']").inner_text().removeprefix("city "),
            }
            for row in rows.all()
        ]
        assert shown == expected
    view_rows = page.get_by_test_id("signal-view").get_by_test_id("event-row")
    assert view_rows.evaluate_all("r => r.map(e => e.dataset.eventId)") == ["v-2", "v-1"]
    expect(view_rows.nth(1).get_by_test_id("versions")).to_have_text("2")  # the replay
    expect(view_rows.nth(0).get_by_test_id("versions")).to_have_text("1")

    # The open session with its values, and the segment the search put the user in.
    session = client.session(USER, "browse_session").current
    assert session is not None
    card = page.get_by_test_id("session-browse_session")
    expect(card.get_by_test_id("session-state")).to_have_text("Open now")
    events = card.locator("[data-testid='session-value'][data-name='events'] td")
    expect(events).to_have_text(str(session.values["events"]))
    segment = page.locator("[data-testid='segment-row'][data-segment='active_trip_planner']")
    expect(segment).to_have_attribute("data-state", "member")
    membership = client.membership(USER, "active_trip_planner")
    assert membership is not None
    expect(segment.get_by_test_id("entered-at")).to_have_text(membership.to_dict()["entered_at"])

    shot = tmp_path / "explorer-timeline.png"
    page.screenshot(path=str(shot), full_page=True)
    assert_rendered_png(page, shot, width=1280)


def test_an_unknown_user_and_a_bad_id_get_a_clear_message(page: Page, api: str) -> None:
    page.goto(f"{api}/explorer/?user={NOBODY}")  # a shared link opens the user directly
    expect(page.get_by_test_id("user-id")).to_have_value(str(NOBODY))
    status = page.get_by_test_id("status")
    expect(status).to_have_attribute("data-state", "empty")
    expect(status).to_contain_text(f"No data for user {NOBODY}")
    expect(page.get_by_test_id("results")).to_be_hidden()

    page.get_by_test_id("user-id").fill("abc")
    page.get_by_test_id("show").click()
    expect(status).to_have_attribute("data-state", "error")
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    # The API's own reason, once, with its status.
    expect(error.get_by_test_id("error-message")).to_have_text(
        "HTTP 400: user_id must be an integer, got 'abc'"
    )
    expect(page.get_by_test_id("results")).to_be_hidden()


def test_the_definitions_page_lists_every_definition_and_the_jobs_health(
    page: Page, api: str, pipeline: dict[str, Any], journey: dict[str, Any], tmp_path: Path
) -> None:
    page.goto(f"{api}/explorer/")
    page.get_by_test_id("definitions-link").click()
    loaded = load_definitions(pipeline["repo"], check_imports=False)
    expected = {
        *(s.name for s in loaded.signals),
        *(s.name for s in loaded.segments),
        *(s.name for s in loaded.sessions),
    }
    rows = page.get_by_test_id("definition-row")
    expect(rows).to_have_count(len(expected))
    assert set(rows.evaluate_all("r => r.map(e => e.dataset.name)")) == expected
    search = page.locator("[data-testid='definition-row'][data-name='search']")
    for shown in ("discovery-team", f"{pipeline['prefix']}events.search", "30d", "guests"):
        expect(search).to_contain_text(shown)
    join = page.locator("[data-testid='definition-row'][data-name='wishlist_enriched']")
    expect(join).to_have_attribute("data-kind", "join")

    # Our job is running; after a refresh its pipelines show rates (two samples) and lag.
    job = page.locator(f"[data-testid='job-row'][data-job='{pipeline['job_name']}']")
    expect(job.get_by_test_id("job-state")).to_have_text("running")
    pipelines = page.locator(f"[data-testid='pipeline-row'][data-job='{pipeline['job_name']}']")
    expect(pipelines).to_have_count(len(CONFIGS))
    assert set(pipelines.evaluate_all("r => r.map(e => e.dataset.pipeline)")) == {
        "search",
        "view",
        "browse_session",
        "active_trip_planner",
    }
    events_per_s = pipelines.first.locator("td").nth(2)
    expect(events_per_s).to_have_text(A_RATE, timeout=3 * UI_TIMEOUT_MS)

    shot = tmp_path / "explorer-definitions.png"
    page.screenshot(path=str(shot), full_page=True)
    assert_rendered_png(page, shot, width=1280)


def assert_rendered_png(page: Page, path: Path, width: int) -> None:
    """The file is a PNG of the page's width, and what it shows is not a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    shot_width, shot_height = struct.unpack(">II", data[16:24])  # IHDR comes first
    assert (shot_width, shot_height >= 600, len(data) > 20_000) == (width, True, True), path
    # The browser decodes the file; text on a page gives many colours, a blank one one or two.
    stats = page.evaluate(
        """async (url) => {
            const image = new Image();
            image.src = url;
            await image.decode();
            const canvas = new OffscreenCanvas(image.width, image.height);
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0);
            const pixels = context.getImageData(0, 0, image.width, image.height).data;
            const colours = new Set();
            let ink = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                colours.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
                if (pixels[i] + pixels[i + 1] + pixels[i + 2] < 600) ink++;
            }
            return { colours: colours.size, ink: ink / (pixels.length / 4) };
        }""",
        "data:image/png;base64," + base64.b64encode(data).decode(),
    )
    assert stats["colours"] > 50 and 0.01 < stats["ink"] < 0.9, (path, stats)
