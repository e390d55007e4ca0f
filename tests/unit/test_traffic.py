"""The traffic generator: seeded journeys and listing updates that keep (or break) the contracts."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from usp_feast.contracts import Contract
from usp_feast.traffic import RawEvent, TrafficConfig, generate

pytestmark = pytest.mark.unit

VALIDATION = Path(__file__).resolve().parents[2] / "validation"
START = datetime(2026, 11, 26, 17, tzinfo=UTC)
# Enough users that every share (malformed, late-first updates, ...) shows up for this seed.
CONFIG = TrafficConfig(users=60, seed=11, start=START)
# The same journeys and updates with nothing broken, duplicated or late: timing is exact there.
CLEAN = replace(CONFIG, malformed_share=0.0, duplicate_share=0.0, late_share=0.0)
JOURNEY_TYPES = ("listing_view", "wishlist_add", "booking")


@pytest.fixture(scope="module")
def events() -> list[RawEvent]:
    return list(generate(CONFIG))


@pytest.fixture(scope="module")
def clean() -> list[RawEvent]:
    return list(generate(CLEAN))


@pytest.fixture(scope="module")
def contracts() -> dict[str, Contract]:
    return {path.stem: Contract.load(path) for path in VALIDATION.glob("*.json")}


def when(event: RawEvent) -> datetime:
    return datetime.fromisoformat(event.payload["event_ts"])


def valid_of(events: list[RawEvent], event_type: str) -> list[RawEvent]:
    return [e for e in events if e.kind == "valid" and e.event_type == event_type]


def updates_by_listing(events: list[RawEvent]) -> dict[int, list[datetime]]:
    found: dict[int, list[datetime]] = defaultdict(list)
    for update in valid_of(events, "listing_update"):
        found[update.payload["listing_id"]].append(when(update))
    return found


def test_the_same_seed_gives_the_same_events(events: list[RawEvent]) -> None:
    again = list(generate(CONFIG))
    other_seed = list(generate(replace(CONFIG, seed=12)))

    assert again == events
    assert other_seed != events


def test_every_event_type_is_generated(events: list[RawEvent]) -> None:
    assert {e.event_type for e in events} == {
        "search",
        "listing_view",
        "wishlist_add",
        "booking",
        "listing_update",
    }
    assert set(Counter(e.kind for e in events)) == {"valid", "malformed", "duplicate", "late"}


def test_valid_events_pass_their_contract_and_malformed_ones_fail_it(
    events: list[RawEvent], contracts: dict[str, Contract]
) -> None:
    wrong = []
    for event in events:
        _, violations = contracts[event.event_type].check_bytes(orjson.dumps(event.payload))
        if (event.kind == "malformed") != bool(violations):
            wrong.append((event, [v.message for v in violations]))

    assert wrong == []


def test_every_way_of_breaking_an_update_fails_its_contract(
    contracts: dict[str, Contract],
) -> None:
    broken = [
        e
        for e in generate(replace(CONFIG, users=10, malformed_share=1.0))
        if e.event_type == "listing_update"
    ]

    assert len(broken) > 20
    assert all(e.kind == "malformed" for e in broken)
    assert all(contracts["listing_update"].check(e.payload) for e in broken)
    # Each breakage happens: listing_id dropped or not a number, rating out of range, bad time.
    assert any("listing_id" not in e.payload for e in broken)
    assert any(isinstance(e.payload.get("listing_id"), str) for e in broken)
    assert any(e.payload["rating"] > 5 for e in broken)
    assert any(e.payload["event_ts"] == "yesterday" for e in broken)
    assert all("user_id" not in e.payload for e in broken)


def test_an_update_carries_exactly_the_contract_fields(events: list[RawEvent]) -> None:
    updates = valid_of(events, "listing_update")

    assert {frozenset(u.payload) for u in updates} == {
        frozenset({"event_id", "event_ts", "listing_id", "price", "rating", "available"})
    }
    assert all(round(u.payload["rating"], 1) == u.payload["rating"] for u in updates)


def test_event_ids_are_unique_except_for_duplicates(events: list[RawEvent]) -> None:
    ids = Counter(e.payload["event_id"] for e in events if e.kind != "duplicate")
    originals = {e.payload["event_id"] for e in events if e.kind != "duplicate"}

    assert [i for i, n in ids.items() if n > 1] == []
    assert all(e.payload["event_id"] in originals for e in events if e.kind == "duplicate")


def test_every_listing_a_journey_touches_has_one_stream_of_updates(
    clean: list[RawEvent],
) -> None:
    touched = {e.payload["listing_id"] for e in clean if e.event_type in JOURNEY_TYPES}
    updated = updates_by_listing(clean)
    viewers: dict[int, set[int]] = defaultdict(set)
    for view in valid_of(clean, "listing_view"):
        viewers[view.payload["listing_id"]].add(view.payload["user_id"])
    shared = {listing for listing, users in viewers.items() if len(users) > 1}
    # Update ids are lu-<seed>-<listing>-<version>.
    versions: dict[int, list[int]] = defaultdict(list)
    for update in valid_of(clean, "listing_update"):
        _, seed, listing, version = update.payload["event_id"].split("-")
        assert int(seed) == CLEAN.seed
        assert int(listing) == update.payload["listing_id"]
        versions[int(listing)].append(int(version))

    assert set(updated) == touched
    # A listing seen by several users still has one stream of versions, not one per user.
    assert shared
    assert all(found == list(range(1, len(found) + 1)) for found in versions.values())
    assert all(len(versions[listing]) <= 4 for listing in shared)
    # A share of listings changes over the span.
    assert 0.15 < sum(len(times) > 1 for times in updated.values()) / len(updated) < 0.5


def test_updates_come_in_event_time_order_with_journeys(clean: list[RawEvent]) -> None:
    stream = [when(e) for e in clean]

    assert {e.kind for e in clean} == {"valid"}
    assert stream == sorted(stream)


def test_most_wishlist_adds_find_an_update_and_a_few_only_get_one_after(
    clean: list[RawEvent],
) -> None:
    updated = updates_by_listing(clean)
    found_before, only_after, several_before = 0, 0, 0
    wishes = valid_of(clean, "wishlist_add")
    for wish in wishes:
        times = updated.get(wish.payload["listing_id"], [])
        before = [t for t in times if t <= when(wish)]
        found_before += bool(before)
        several_before += len(before) > 1
        only_after += not before and any(t > when(wish) for t in times)

    assert found_before / len(wishes) > 0.8
    assert 0 < only_after / len(wishes) < 0.2
    assert several_before > 0  # a join has versions to pick between


def test_a_late_first_update_follows_the_wishlist_add_shortly(clean: list[RawEvent]) -> None:
    updated = updates_by_listing(clean)
    gaps = [
        min(updated[w.payload["listing_id"]]) - when(w)
        for w in valid_of(clean, "wishlist_add")
        if min(updated[w.payload["listing_id"]]) > when(w)
    ]

    assert gaps
    assert all(gap <= timedelta(minutes=2) for gap in gaps)


def test_the_first_update_precedes_a_listing_by_seconds_to_minutes(
    clean: list[RawEvent],
) -> None:
    updated = updates_by_listing(clean)
    first_seen: dict[int, datetime] = {}
    for event in clean:
        if event.event_type in JOURNEY_TYPES:
            first_seen.setdefault(event.payload["listing_id"], when(event))
    leads = [
        first_seen[listing] - min(updated[listing])
        for listing in first_seen
        if min(updated[listing]) < first_seen[listing]
    ]

    assert len(leads) > 0.8 * len(first_seen)
    assert all(timedelta(seconds=1) <= lead <= timedelta(minutes=30) for lead in leads)


def test_switching_updates_off_removes_them_and_changes_nothing_else(
    events: list[RawEvent],
) -> None:
    without = list(generate(replace(CONFIG, listing_updates=False)))

    assert without
    assert all(e.event_type != "listing_update" for e in without)
    assert without == [e for e in events if e.event_type != "listing_update"]
