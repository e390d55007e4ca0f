"""Realistic user-activity traffic for the example domain (DESIGN.md section 8).

Users follow non-linear journeys: search a destination, browse listings, leave, come back
later, wishlist, sometimes book. Hosts update the listings those journeys touch
(``listing_update``: price, rating, availability): each listing gets its first update a little
before anyone sees it, some get more over the span, and a few wishlisted ones are first updated
only shortly *after* the wishlist add, so a join of wishlist adds with listing updates meets
both a version to pick and a missing right side. A share of events is malformed, duplicated or
late, so every path of the platform is exercised. Pure and seeded: the same seed gives the same
events.

Example:
    >>> from datetime import UTC, datetime
    >>> config = TrafficConfig(users=3, seed=1, start=datetime(2026, 11, 26, 17, tzinfo=UTC))
    >>> events = list(generate(config))
    >>> events == list(generate(config))
    True
    >>> sorted({e.event_type for e in events})
    ['listing_update', 'listing_view', 'search', 'wishlist_add']
    >>> update = next(e for e in events if e.event_type == "listing_update")
    >>> sorted(update.payload)
    ['available', 'event_id', 'event_ts', 'listing_id', 'price', 'rating']
    >>> quiet = TrafficConfig(users=3, seed=1, start=config.start, listing_updates=False)
    >>> any(e.event_type == "listing_update" for e in generate(quiet))
    False
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["CITIES", "ROOM_TYPES", "RawEvent", "TrafficConfig", "generate", "iso"]

CITIES = ("Paris", "Rome", "Lisbon", "Tokyo", "New York", "Cape Town", "Mexico City", "Seoul")
ROOM_TYPES = ("entire_home", "private_room", "shared_room", "hotel_room")
QUERIES = ("flat near centre", "loft", "beach house", "quiet studio", "family home", "cabin")


@dataclass(frozen=True)
class RawEvent:
    """One raw event as a producer would send it.

    Attributes:
        event_type: ``search``, ``listing_view``, ``wishlist_add``, ``booking`` or
            ``listing_update``; the topic is ``events.<event_type>``.
        payload: The JSON object (possibly malformed on purpose).
        kind: ``valid``, ``malformed``, ``duplicate`` or ``late``.
    """

    event_type: str
    payload: dict[str, Any]
    kind: str = "valid"

    @property
    def topic(self) -> str:
        """Raw topic of the event."""
        return f"events.{self.event_type}"


@dataclass(frozen=True)
class TrafficConfig:
    """Shape of generated traffic.

    Attributes:
        users: How many users have a journey.
        seed: Seed of every random choice; the same config gives the same events.
        start: Event time the journeys start from (timezone-aware UTC); None means early
            enough that the last journey ends by now (no event from the future, which the jobs
            refuse), so the output then depends on the clock.
        span: How long the journeys last; listing updates are spread over it too.
        malformed_share: Share of events broken on purpose (they fail their contract).
        duplicate_share: Share of events sent twice (same payload and ``event_id``).
        late_share: Late searches, as a share of the journey events, with event times well
            behind the stream.
        first_user_id: ``user_id`` of the first user; the others follow.
        listing_updates: Whether to emit ``listing_update`` events for the listings the
            journeys touch. Switching them off leaves every other event as it was.
    """

    users: int = 20
    seed: int = 7
    start: datetime | None = None
    span: timedelta = timedelta(hours=2)
    malformed_share: float = 0.03
    duplicate_share: float = 0.02
    late_share: float = 0.02
    first_user_id: int = 1
    listing_updates: bool = True


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as producers send ``event_ts``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def generate(config: TrafficConfig = TrafficConfig()) -> Iterator[RawEvent]:
    """Yield every user's journey and the listings' updates, in event-time order.

    Late events come last, out of order; a duplicate follows its original.

    Args:
        config: Users, seed, time span and the shares of broken events.

    Yields:
        The events, each with its ``kind`` (``valid``, ``malformed``, ``duplicate``, ``late``).
    """
    rng = random.Random(config.seed)
    # Updates draw from their own generator, so switching them on or off changes no other
    # event (not even which journey events are malformed or duplicated).
    update_rng = random.Random(f"listing-updates-{config.seed}")
    start = config.start or _live_start(config)
    events: list[tuple[datetime, RawEvent]] = []
    for offset in range(config.users):
        user = config.first_user_id + offset
        events.extend(_journey(rng, user, start, config.span))
    events.sort(key=lambda pair: pair[0])
    if config.listing_updates:
        updates = _listing_updates(update_rng, events, start, config.span, config.seed)
        # A stable sort: an update at the same instant as a journey event comes after it.
        events = sorted(events + updates, key=lambda pair: pair[0])
    counter = 0  # journey events only, so late events do not depend on the updates either
    for _, event in events:
        if event.event_type == "listing_update":
            own_rng = update_rng
        else:
            own_rng = rng
            counter += 1
        roll = own_rng.random()
        if roll < config.malformed_share:
            yield _malformed(own_rng, event)
            continue
        yield event
        if roll < config.malformed_share + config.duplicate_share:
            yield RawEvent(event.event_type, dict(event.payload), "duplicate")
    # Late events: plausible, valid, but with event times well behind the stream.
    for index in range(int(counter * config.late_share)):
        user = config.first_user_id + rng.randrange(config.users)
        moment = start + config.span * rng.random() * 0.5
        payload = _search(rng, user, moment, rng.choice(CITIES), f"late-{config.seed}-{index}")
        yield RawEvent("search", payload, "late")


def _live_start(config: TrafficConfig) -> datetime:
    # Journeys run on past their span; shift them all back so the last one ends by now (the
    # same draws from the same seed, so only the anchor moves).
    now = datetime.now(UTC)
    rng, start = random.Random(config.seed), now - config.span
    last = max(
        (
            moment
            for offset in range(config.users)
            for moment, _ in _journey(rng, config.first_user_id + offset, start, config.span)
        ),
        default=start,
    )
    return start - max(last - now, timedelta(0))


def _journey(
    rng: random.Random, user: int, start: datetime, span: timedelta
) -> list[tuple[datetime, RawEvent]]:
    out: list[tuple[datetime, RawEvent]] = []
    moment = start + span * rng.random() * 0.3
    city = rng.choice(CITIES)
    sequence = 0

    def next_id() -> str:
        nonlocal sequence
        sequence += 1
        return f"u{user}-{sequence}-{rng.getrandbits(32):08x}"

    for visit in range(rng.randint(1, 3)):
        if visit and rng.random() < 0.4:
            city = rng.choice(CITIES)  # changed their mind about the destination
        for _ in range(rng.randint(1, 3)):
            out.append((moment, RawEvent("search", _search(rng, user, moment, city, next_id()))))
            moment += timedelta(seconds=rng.randint(5, 90))
            for _ in range(rng.randint(0, 4)):
                listing = rng.randint(1, 500)
                payload = {
                    "event_id": next_id(),
                    "event_ts": iso(moment),
                    "user_id": user,
                    "listing_id": listing,
                    "city": city,
                    "price": round(rng.uniform(40, 600), 2),
                    "room_type": rng.choice(ROOM_TYPES),
                }
                out.append((moment, RawEvent("listing_view", payload)))
                moment += timedelta(seconds=rng.randint(10, 240))
                if rng.random() < 0.25:
                    wish = {
                        "event_id": next_id(),
                        "event_ts": iso(moment),
                        "user_id": user,
                        "listing_id": listing,
                    }
                    out.append((moment, RawEvent("wishlist_add", wish)))
                    moment += timedelta(seconds=rng.randint(5, 60))
        # Leave and come back later: a gap longer than a browsing session.
        moment += span * rng.uniform(0.05, 0.2)
    if rng.random() < 0.3:
        booking = {
            "event_id": next_id(),
            "event_ts": iso(moment),
            "user_id": user,
            "listing_id": rng.randint(1, 500),
            "nights": rng.randint(1, 14),
            "price": round(rng.uniform(40, 600), 2),
        }
        out.append((moment, RawEvent("booking", booking)))
    return out


def _listing_updates(
    rng: random.Random,
    journeys: list[tuple[datetime, RawEvent]],
    start: datetime,
    span: timedelta,
    seed: int,
) -> list[tuple[datetime, RawEvent]]:
    """Updates of every listing the time-sorted ``journeys`` view, wishlist or book."""
    first_seen: dict[int, datetime] = {}
    first_wished: dict[int, datetime] = {}
    first_price: dict[int, float] = {}
    for moment, event in journeys:
        listing = event.payload.get("listing_id")
        if not isinstance(listing, int):
            continue
        first_seen.setdefault(listing, moment)
        if event.event_type == "wishlist_add":
            first_wished.setdefault(listing, moment)
        elif event.event_type == "listing_view":
            first_price.setdefault(listing, event.payload["price"])
    end = start + span
    out: list[tuple[datetime, RawEvent]] = []
    for listing in sorted(first_seen):
        wished = first_wished.get(listing)
        if wished is not None and rng.random() < 0.1:
            # The host edits the listing only after someone wishlisted it: a join must wait
            # for (or give up on) the right side.
            moment = wished + timedelta(seconds=rng.uniform(5, 120))
        else:
            moment = first_seen[listing] - timedelta(seconds=rng.uniform(5, 1800))
        price = first_price.get(listing)
        if price is None:
            price = round(rng.uniform(40, 600), 2)
        rating = round(rng.triangular(2.5, 5.0, 4.7), 1)
        available = rng.random() < 0.9
        # About a third of the listings are edited again later in the span.
        later = rng.randint(1, 3) if rng.random() < 0.3 else 0
        room = max(end, moment + timedelta(minutes=1)) - moment
        moments = [moment, *sorted(moment + room * rng.random() for _ in range(later))]
        for version, when in enumerate(moments, start=1):
            if version > 1:
                # A price change, sometimes a calendar or rating change.
                price = round(price * rng.uniform(0.85, 1.15), 2)
                if rng.random() < 0.25:
                    available = not available
                if rng.random() < 0.3:
                    rating = round(min(5.0, max(0.0, rating + rng.choice((-0.1, 0.1)))), 1)
            payload = {
                "event_id": f"lu-{seed}-{listing}-{version}",
                "event_ts": iso(when),
                "listing_id": listing,
                "price": price,
                "rating": rating,
                "available": available,
            }
            out.append((when, RawEvent("listing_update", payload)))
    return out


def _search(
    rng: random.Random, user: int, moment: datetime, city: str, event_id: str
) -> dict[str, Any]:
    checkin = (moment + timedelta(days=rng.randint(7, 90))).date()
    checkout = checkin + timedelta(days=rng.randint(1, 14))
    return {
        "event_id": event_id,
        "event_ts": iso(moment),
        "user_id": user,
        "query": rng.choice(QUERIES),
        "city": city,
        "checkin": checkin.isoformat(),
        "checkout": checkout.isoformat(),
        "guests": rng.randint(1, 8),
    }


def _malformed(rng: random.Random, event: RawEvent) -> RawEvent:
    """A copy of ``event`` that breaks its contract (``kind="malformed"``)."""
    payload = dict(event.payload)
    # Events without a user (listing updates) are keyed by their listing: break that instead.
    key = "user_id" if "user_id" in payload else "listing_id"
    breakage = rng.choice(("drop_key", "bad_type", "out_of_range", "bad_time"))
    if breakage == "drop_key":
        payload.pop(key, None)
    elif breakage == "bad_type":
        payload[key] = "not-a-number"
    elif breakage == "out_of_range":
        if key == "user_id":
            payload["user_id"] = -abs(int(payload["user_id"]))
        else:
            payload["rating"] = round(rng.uniform(5.1, 10.0), 1)
    else:
        payload["event_ts"] = "yesterday"
    return RawEvent(event.event_type, payload, "malformed")
