"""Realistic user-activity traffic for the example domain (DESIGN.md section 8).

Users follow non-linear journeys: search a destination, browse listings, leave, come back
later, wishlist, sometimes book. A share of events is malformed, duplicated or late, so every
path of the platform is exercised. Pure and seeded: the same seed gives the same events.
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
    """Shape of generated traffic."""

    users: int = 20
    seed: int = 7
    start: datetime | None = None
    span: timedelta = timedelta(hours=2)
    malformed_share: float = 0.03
    duplicate_share: float = 0.02
    late_share: float = 0.02
    first_user_id: int = 1


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as producers send ``event_ts``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def generate(config: TrafficConfig = TrafficConfig()) -> Iterator[RawEvent]:
    """Yield events of every user's journey, in event-time order (late ones out of order)."""
    rng = random.Random(config.seed)
    start = config.start or (datetime.now(UTC) - config.span)
    events: list[tuple[datetime, RawEvent]] = []
    for offset in range(config.users):
        user = config.first_user_id + offset
        events.extend(_journey(rng, user, start, config.span))
    events.sort(key=lambda pair: pair[0])
    counter = 0
    for _, event in events:
        counter += 1
        roll = rng.random()
        if roll < config.malformed_share:
            yield _malformed(rng, event)
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
    payload = dict(event.payload)
    breakage = rng.choice(("drop_user", "bad_type", "out_of_range", "bad_time"))
    if breakage == "drop_user":
        payload.pop("user_id", None)
    elif breakage == "bad_type":
        payload["user_id"] = "not-a-number"
    elif breakage == "out_of_range":
        payload["user_id"] = -abs(int(payload.get("user_id", 1)))
    else:
        payload["event_ts"] = "yesterday"
    return RawEvent(event.event_type, payload, "malformed")
