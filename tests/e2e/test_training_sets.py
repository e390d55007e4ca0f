"""Training sets end to end: signal, session and segment rows → offline Parquet → Feast.

One Flink job runs the ``search``, ``view`` and ``booking`` signals, the session engagements
``browse_session`` (30-minute gap) and ``views_10m`` (10-minute windows every 5) and the segment
``active_trip_planner`` over two hours of past events. Once the offline Parquet parts are on disk
the job stops, and ``FeatureStore.get_historical_features`` over hundreds of entity rows is
compared with a point-in-time join computed here from the Parquet rows with pyarrow (and, where
the test knows the answer from the events it produced, checked against those too): no value from
after an entity row's timestamp may leak in.

Every entity row comes back once. One with no row of a view at or before its time (or none
within the view's TTL) gets nulls for that view's features, whether its user has later rows or
none at all; Feast's stock ``file`` offline store (Dask) instead drops the row when the user has
only later rows, which is one reason the repository uses ``usp_feast.offline_store``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow.dataset as ds
import pytest
from feast import FeatureStore

from tests.e2e.harness import JOB_START_TIMEOUT, Job, wait_for, workspace
from usp_feast import SignalClient
from usp_feast.kafka_io import produce_events

pytestmark = pytest.mark.e2e

MS = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ACTIVE = (701, 702, 703, 704, 705, 706)
BOOKERS = (702, 704)  # book after their second visit, search again in the third
SEARCH_ONCE = 705  # searches in its first visit only: its search values expire (ttl 1d)
NEVER_SEARCHES = 706  # views only: no search or segment rows at all
NO_DATA = (790, 791, 792)  # no event anywhere
WARM_UP = 799  # one event per signal long before the others, to know the job is running
# Visits, in minutes before the anchor: 35 minutes between them, more than browse_session's
# 30-minute gap plus its minute of lateness, so the first two close; the third stays open.
VISITS = ((110, 95), (60, 50), (15, 4))
CITIES = ("Lisbon", "Porto", "Rome", "Nice")


@dataclass(frozen=True)
class View:
    """A feature view as the reference join sees it: offline folder, features, TTL."""

    name: str
    folder: str
    features: tuple[str, ...]
    ttl: timedelta | None  # None: the view has no TTL (sessions and segments)

    def refs(self) -> list[str]:
        return [f"{self.name}:{f}" for f in self.features]

    def columns(self) -> list[str]:
        return [f"{self.name}__{f}" for f in self.features]


# TTLs as the definitions give them (search.yaml: ttl 1d; sessions and segments have none).
SEARCH_TTL = timedelta(days=1)
SEARCH = View("search", "data/signals/search", ("event_id", "query", "city", "guests"), SEARCH_TTL)
BROWSE = View(
    "browse_session",
    "data/sessions/browse_session",
    ("event_id", "events", "top_cities", "listings_viewed"),
    None,
)
WINDOWS = View("views_10m", "data/sessions/views_10m", ("event_id", "count", "max_price"), None)
SEGMENT = View(
    "segment_active_trip_planner",
    "data/segments/active_trip_planner",
    ("event_id", "in_segment", "change", "reason"),
    None,
)
VIEWS = (SEARCH, BROWSE, WINDOWS, SEGMENT)


@dataclass(frozen=True)
class Event:
    """One produced raw event, as the test remembers it."""

    kind: str  # search, listing_view or booking
    user: int
    event_id: str
    at_ms: int
    fields: dict[str, Any]

    def record(self) -> tuple[str, bytes]:
        stamp = EPOCH + self.at_ms * MS  # whole milliseconds, no float rounding
        event_ts = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        body = {"event_id": self.event_id, "event_ts": event_ts, "user_id": self.user}
        return f"events.{self.kind}", orjson.dumps({**body, **self.fields})


def journeys(anchor_ms: int, rng: random.Random) -> list[list[Event]]:
    """Three visits per active user (searches and views) and bookings, in event-time phases.

    The phases: first visits, second visits, bookings, third visits; each in event-time order.
    """
    phases: list[list[Event]] = [[], [], [], []]
    for user in ACTIVE:
        for visit, (start, end) in enumerate(VISITS):
            searches = 0 if user == NEVER_SEARCHES else rng.randint(1, 3)
            if user == SEARCH_ONCE and visit > 0:
                searches = 0
            views = rng.randint(1, 4)
            moments = rng.sample(range((end * 60_000), (start * 60_000)), searches + views)
            for n, ago in enumerate(moments):
                city = rng.choice(CITIES)
                if n < searches:
                    fields = {
                        "query": f"  Flat {rng.randint(1, 9)}  ",
                        "city": f" {city.lower()} ",
                        "checkin": "2027-03-01",
                        "checkout": "2027-03-04",
                        "guests": rng.randint(1, 6),
                    }
                    kind = "search"
                else:
                    listing = rng.randint(1, 12)
                    fields = {
                        "listing_id": listing,
                        "city": city,
                        "price": 80.0 + listing,
                        "room_type": "entire_home",
                    }
                    kind = "listing_view"
                event = Event(kind, user, f"{user}-{visit}-{n}", anchor_ms - ago, fields)
                phases[visit if visit < 2 else 3].append(event)
            if user in BOOKERS and visit == 1:
                fields = {"listing_id": 3, "nights": 2, "price": 120.0}
                at = anchor_ms - (end - 2) * 60_000
                phases[2].append(Event("booking", user, f"{user}-{visit}-b", at, fields))
    # Each raw topic in event-time order: the jobs see no late input.
    return [sorted(phase, key=lambda e: e.at_ms) for phase in phases]


def warm_up_events(anchor_ms: int) -> list[Event]:
    at = anchor_ms - 4 * 3_600_000  # before every other event: sets no event time ahead
    search = {
        "query": "cabin",
        "city": "Oslo",
        "checkin": "2027-03-01",
        "checkout": "2027-03-02",
        "guests": 1,
    }
    view = {"listing_id": 1, "city": "Oslo", "price": 81.0, "room_type": "entire_home"}
    # The booking first: read before or after the search, it finds the user outside.
    return [
        Event("booking", WARM_UP, "warm-b", at, {"listing_id": 1, "nights": 1, "price": 81.0}),
        Event("search", WARM_UP, "warm-s", at + 1, search),
        Event("listing_view", WARM_UP, "warm-v", at + 2, view),
    ]


def offline_rows(repo: Path, view: View) -> list[dict[str, Any]]:
    """Every row of a view's offline folder, read with pyarrow (no Feast)."""
    folder = repo / view.folder
    if not folder.is_dir():
        return []
    return ds.dataset(str(folder), format="parquet").to_table().to_pylist()


# What the test can predict from the events alone, to check the offline rows behind the
# reference: signal rows, closed sessions, closed windows and membership changes.


def expected_search_rows(events: Sequence[Event]) -> dict[str, tuple]:
    return {
        e.event_id: (
            e.user,
            e.at_ms,
            " ".join(e.fields["query"].split()).lower(),
            e.fields["city"].strip().title(),
            e.fields["guests"],
        )
        for e in events
        if e.kind == "search"
    }


def expected_sessions(events: Sequence[Event], anchor_ms: int) -> set[tuple[int, int, int, int]]:
    """(user, started ms, last event ms, events) of each closed visit of the active users."""
    closed = set()
    for user in ACTIVE:
        for start, end in VISITS[:2]:
            times = [
                e.at_ms
                for e in events
                if e.user == user
                and e.kind in ("search", "listing_view")
                and anchor_ms - start * 60_000 <= e.at_ms <= anchor_ms - end * 60_000
            ]
            closed.add((user, min(times), max(times), len(times)))
    return closed


def expected_windows(events: Sequence[Event], until_ms: int) -> dict[tuple[int, int], int]:
    """(user, window end ms) → views, for every 10-minute window (every 5) ending by then."""
    step = 5 * 60_000
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for e in events:
        if e.kind != "listing_view" or e.user == WARM_UP:
            continue
        # In the windows starting at the step boundary at or before it and the one before.
        start = e.at_ms - e.at_ms % step
        for end in (start + step, start + 2 * step):
            if end <= until_ms:
                counts[(e.user, end)] += 1
    return dict(counts)


def expected_changes(events: Sequence[Event]) -> dict[int, list[tuple[str, str]]]:
    """Per user, (cause, change) in order: a search enters or renews, a booking exits."""
    changes: dict[int, list[tuple[str, str]]] = defaultdict(list)
    inside: set[int] = set()
    for e in events:
        if e.kind == "search":
            changes[e.user].append((e.event_id, "renewed" if e.user in inside else "entered"))
            inside.add(e.user)
        elif e.kind == "booking" and e.user in inside:
            changes[e.user].append((e.event_id, "exited"))
            inside.discard(e.user)
    return dict(changes)


def ms(moment: datetime) -> int:
    return (moment - EPOCH) // MS


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory, stack) -> Iterator[dict]:
    space = workspace(tmp_path_factory.mktemp("e2e_training"), stack.kafka, stack.redis, "train")
    root, repo, prefix, streaming = space.root, space.repo, space.prefix, space.streaming
    names = (
        "search",
        "view",
        "booking",
        "session_browse_session",
        "session_views_10m",
        "segment_active_trip_planner",
    )
    job = Job(
        repo, [streaming / f"{n}.json" for n in names], root / "checkpoints", root / "job.log"
    )
    client = SignalClient.from_repo(repo)

    def produce(events: Sequence[Event]) -> None:
        records = [e.record() for e in events]
        produce_events(stack.kafka, [(prefix + topic, raw) for topic, raw in records])

    anchor_ms = ms(datetime.now(UTC))
    job.start()
    try:
        # The journeys go in only once the signal operators run: read as one backlog at start,
        # one signal could reach the session job seconds before the other and, with event time
        # running on meanwhile, make the other's rows late.
        produce(warm_up_events(anchor_ms))
        wait_for(
            lambda: all(client.recent(WARM_UP, s) for s in ("search", "view", "booking")),
            job,
            JOB_START_TIMEOUT,
            "the warm-up events in the store",
        )
        everything = warm_up_events(anchor_ms)
        # One phase at a time, as live traffic arrives: the segment job applies searches and
        # bookings in the order it reads them, and a booking read after newer searches gives
        # another history than event-time order would (not what this module tests).
        for n, phase in enumerate(journeys(anchor_ms, random.Random(20261127))):
            produce(phase)
            everything += phase
            wait_for(
                partial(changes_written, repo, tuple(everything)),
                job,
                60,
                f"the segment changes of phase {n + 1}",
            )
        newest_view = max(e.at_ms for e in everything if e.kind == "listing_view")
        wait_for(
            lambda: offline_complete(repo, everything, anchor_ms, newest_view),
            job,
            120,
            "every expected row in the offline Parquet folders",
        )
    finally:
        job.stop()
    # Read after the job stopped: Feast and the reference see the same files.
    yield {
        "repo": repo,
        "events": everything,
        "anchor_ms": anchor_ms,
        "newest_view": newest_view,
        "rows": {v.name: offline_rows(repo, v) for v in VIEWS},
        "feast": FeatureStore(repo_path=str(repo)),
    }
    client.store.drop_project()


def changes_written(repo: Path, events: Sequence[Event]) -> bool:
    segment = {(r["user_id"], r["event_id"]) for r in offline_rows(repo, SEGMENT)}
    return {(u, c) for u, cs in expected_changes(events).items() for c, _ in cs} <= segment


def offline_complete(repo: Path, events: Sequence[Event], anchor_ms: int, newest_view: int) -> bool:
    search = {r["event_id"] for r in offline_rows(repo, SEARCH)}
    sessions = {(r["user_id"], ms(r["started_at"])) for r in offline_rows(repo, BROWSE)}
    windows = {(r["user_id"], ms(r["event_ts"])) for r in offline_rows(repo, WINDOWS)}
    return (
        set(expected_search_rows(events)) <= search
        and changes_written(repo, events)
        and {(u, started) for u, started, _, _ in expected_sessions(events, anchor_ms)} <= sessions
        and set(expected_windows(events, newest_view)) <= windows
    )


# The reference point-in-time join (no Feast).


def plain(value: Any) -> Any:
    """A value as Python compares it: arrays as lists, numpy scalars unwrapped, NaN as None."""
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return plain(value.item())
    return value


def by_user(rows: Sequence[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["user_id"]].append(row)
    return grouped


def as_of(view: View, rows: Sequence[dict[str, Any]], user: int, at: datetime) -> tuple:
    """The values a point-in-time join gives ``user`` at ``at`` (nulls when there are none).

    The newest row at or before ``at`` (ties: the newest ``created_ts``) and within the TTL.
    """
    live = [
        r
        for r in rows
        if r["event_ts"] <= at and (view.ttl is None or r["event_ts"] >= at - view.ttl)
    ]
    if not live:
        return (None,) * len(view.features)
    newest = max((r["event_ts"], r.get("created_ts") or r["event_ts"]) for r in live)
    tied = {
        tuple(repr(plain(r[f])) for f in view.features)
        for r in live
        if (r["event_ts"], r.get("created_ts") or r["event_ts"]) == newest
    }
    # Rows of one time are copies here (no replays, no corrections): one answer, no guess.
    assert len(tied) == 1, f"{view.name}: user {user} has different rows at {newest}"
    best = next(r for r in live if (r["event_ts"], r.get("created_ts") or r["event_ts"]) == newest)
    return tuple(plain(best[f]) for f in view.features)


def entity_rows(training: dict) -> pd.DataFrame:
    """Hundreds of (user, time) rows, unique, on and around every offline row's event time.

    Each offline row's event time exactly and a millisecond either side, a search's event
    time plus the TTL exactly and a millisecond past it, and random times (seeded) across and
    around the two hours, for active users, the warm-up user and users with no data.
    """
    rng = random.Random(7)
    wanted: set[tuple[int, int]] = set()
    for view in VIEWS:
        for row in training["rows"][view.name]:
            at = ms(row["event_ts"])
            wanted |= {(row["user_id"], at + d) for d in (-1, 0, 1)}
            if view is SEARCH:
                ttl_ms = SEARCH_TTL // MS
                wanted |= {(row["user_id"], at + ttl_ms), (row["user_id"], at + ttl_ms + 1)}
    times = [e.at_ms for e in training["events"] if e.user != WARM_UP]
    low, high = min(times) - 30 * 60_000, max(times) + 30 * 60_000
    users = (*ACTIVE, *NO_DATA, WARM_UP)
    wanted |= {(rng.choice(users), rng.randint(low, high)) for _ in range(300)}
    # Users with no data at moments where others have some.
    wanted |= {(rng.choice(NO_DATA), at) for at in rng.sample(times, 20)}
    # Each (user, time) once: the answers are matched back by them.
    users_, stamps = zip(*sorted(wanted), strict=True)
    return pd.DataFrame(
        {
            "user_id": list(users_),
            "event_timestamp": pd.to_datetime(list(stamps), unit="ms", utc=True),
        }
    )


@pytest.fixture(scope="module")
def entities(training: dict) -> pd.DataFrame:
    return entity_rows(training)


def expected(
    training: dict, views: Sequence[View], entities: pd.DataFrame
) -> dict[tuple[int, int], tuple]:
    """Per entity row (user, ns): the features of every view, in order."""
    grouped = {v.name: by_user(training["rows"][v.name]) for v in views}
    answers: dict[tuple[int, int], tuple] = {}
    for user, stamp in zip(entities["user_id"], entities["event_timestamp"], strict=True):
        at = stamp.to_pydatetime()
        values: tuple = ()
        for view in views:
            values += as_of(view, grouped[view.name].get(user, []), user, at)
        answers[(int(user), stamp.value)] = values
    return answers


def returned(
    store: FeatureStore, views: Sequence[View], entities: pd.DataFrame
) -> dict[tuple[int, int], tuple]:
    refs = [ref for v in views for ref in v.refs()]
    found = store.get_historical_features(entities, refs, full_feature_names=True).to_df()
    columns = [c for v in views for c in v.columns()]
    answers = {
        (int(user), pd.Timestamp(stamp).value): tuple(plain(v) for v in values)
        for user, stamp, *values in found[["user_id", "event_timestamp", *columns]].itertuples(
            index=False
        )
    }
    assert len(answers) == len(found), "Feast returned an entity row twice"
    return answers


def assert_no_leak(training: dict, views: Sequence[View], got: dict) -> None:
    """No returned value comes from a row with an event time after the entity row's time."""
    times: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for view in views:
        for row in training["rows"][view.name]:
            times[(view.name, row["user_id"], row["event_id"])].append(ms(row["event_ts"]))
    produced = {e.event_id: e.at_ms for e in training["events"]}
    for (user, stamp_ns), values in got.items():
        at_ms = stamp_ns // 1_000_000
        offset = 0
        for view in views:
            event_id = values[offset]  # event_id comes first in every view's features
            offset += len(view.features)
            if event_id is None:
                continue
            assert min(times[(view.name, user, event_id)]) <= at_ms, (view.name, user, event_id)
            if view is SEARCH:  # the signal's rows are the produced events themselves
                assert produced[event_id] <= at_ms, (user, event_id)


def mismatches(got: dict, want: dict) -> list[str]:
    problems = [f"{k}: missing, expected {v}" for k, v in want.items() if k not in got]
    problems += [f"{k}: returned {v}, not asked for" for k, v in got.items() if k not in want]
    problems += [
        f"{k}: returned {got[k]}, expected {v}" for k, v in want.items() if k in got and got[k] != v
    ]
    return problems


def test_offline_rows_are_the_events_produced(training: dict) -> None:
    """The reference reads the Parquet rows; here they are checked against the events."""
    events, rows = training["events"], training["rows"]
    signal = {
        r["event_id"]: (r["user_id"], ms(r["event_ts"]), r["query"], r["city"], r["guests"])
        for r in rows["search"]
    }
    assert signal == expected_search_rows(events)
    assert all(r["created_ts"] is not None for r in rows["search"])

    sessions = {
        (r["user_id"], ms(r["started_at"]), ms(r["last_event_at"]), r["events"])
        for r in rows["browse_session"]
        if r["user_id"] != WARM_UP
    }
    assert sessions == expected_sessions(events, training["anchor_ms"])
    assert all(r["closed"] for r in rows["browse_session"])

    until = training["newest_view"]
    served = {
        (r["user_id"], ms(r["event_ts"])): r["count"]
        for r in rows["views_10m"]
        if r["user_id"] != WARM_UP and ms(r["event_ts"]) <= until
    }
    assert served == expected_windows(events, until)

    changes: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for r in sorted(rows[SEGMENT.name], key=lambda r: r["event_ts"]):
        changes[r["user_id"]].append((r["event_id"], r["change"]))
    assert dict(changes) == expected_changes(events)


@pytest.mark.parametrize("view", VIEWS, ids=[v.name for v in VIEWS])
def test_each_view_is_point_in_time_correct(
    training: dict, entities: pd.DataFrame, view: View
) -> None:
    store = training["feast"]
    registered = store.get_stream_feature_view(view.name).ttl
    assert registered == (view.ttl or timedelta(0)), "the reference assumes another TTL"
    assert len(entities) > 500

    want = expected(training, [view], entities)
    got = returned(store, [view], entities)

    assert mismatches(got, want) == []
    assert_no_leak(training, [view], got)
    # Both sides of the rule are exercised: values found, and nulls for users whose rows in
    # this view all come later (or, for the signal, are older than the TTL).
    users = {r["user_id"] for r in training["rows"][view.name]}
    assert sum(v[0] is not None for v in want.values()) > 100
    assert sum(v[0] is None and user in users for (user, _), v in want.items()) > 10


def test_search_values_follow_the_produced_events(training: dict, entities: pd.DataFrame) -> None:
    """The signal's training set, checked against the events produced (not the Parquet rows)."""
    got = returned(training["feast"], [SEARCH], entities)
    searches = defaultdict(list)
    for event_id, (user, at_ms, query, city, guests) in expected_search_rows(
        training["events"]
    ).items():
        searches[user].append((at_ms, (event_id, query, city, guests)))
    ttl_ms = SEARCH_TTL // MS
    checked = 0
    for user, stamp in zip(entities["user_id"], entities["event_timestamp"], strict=True):
        at_ms = stamp.value // 1_000_000
        live = [s for s in searches.get(user, []) if at_ms - ttl_ms <= s[0] <= at_ms]
        key = (int(user), stamp.value)
        assert got[key] == (max(live)[1] if live else (None,) * 4), key
        checked += bool(live)
    assert checked > 100


def test_one_training_set_over_every_view(training: dict, entities: pd.DataFrame) -> None:
    """Signal, session and segment features in one call, each view joined on its own."""
    want = expected(training, VIEWS, entities)
    got = returned(training["feast"], VIEWS, entities)

    assert mismatches(got, want) == []
    assert_no_leak(training, VIEWS, got)
    # Rows where some views have values and others not: one view's gap empties no other.
    starts = [0, *np.cumsum([len(v.features) for v in VIEWS])[:-1]]
    mixed = [v for v in want.values() if len({v[i] is None for i in starts}) == 2]
    assert len(mixed) > 50


def test_entity_rows_without_earlier_data_get_nulls(training: dict) -> None:
    """Before a user's first row, past the TTL, and for users with no data: nulls, not gaps.

    Feast's stock ``file`` offline store (0.67) drops the first two kinds of row from the
    result instead; this is the case that tells the two apart.
    """
    store = training["feast"]
    rows = training["rows"]["search"]
    first = min(r["event_ts"] for r in rows if r["user_id"] == ACTIVE[0])
    last_once = max(r["event_ts"] for r in rows if r["user_id"] == SEARCH_ONCE)

    def city_at(user: int, at: datetime) -> str:
        return next(r["city"] for r in rows if r["user_id"] == user and r["event_ts"] == at)

    asked = [
        (ACTIVE[0], first - MS, None),  # the user's searches all come later
        (ACTIVE[0], first, city_at(ACTIVE[0], first)),
        (NO_DATA[0], first - MS, None),  # no data at all
        (SEARCH_ONCE, last_once + SEARCH_TTL, city_at(SEARCH_ONCE, last_once)),  # TTL's end
        (SEARCH_ONCE, last_once + SEARCH_TTL + MS, None),  # expired
    ]
    entities = pd.DataFrame(
        {"user_id": [a[0] for a in asked], "event_timestamp": [a[1] for a in asked]}
    )
    found = store.get_historical_features(entities, ["search:city"]).to_df()
    cities = sorted(
        (u, pd.Timestamp(t).to_pydatetime(), plain(c))
        for u, t, c in found[["user_id", "event_timestamp", "city"]].itertuples(index=False)
    )
    assert cities == sorted(asked, key=lambda a: (a[0], a[1]))
