"""Turn one raw event into one signal row: the code path shared by every way events arrive.

The streaming job, the backfill and the demo all call :meth:`SignalPipeline.process`, so the
stream and the batch produce the same rows for the same events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from usp_feast.spec import SignalSpec

__all__ = ["RejectedEvent", "SignalPipeline", "parse_event_time"]

_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "timestamp": (str, int, float),
}


class RejectedEvent(ValueError):
    """An event that cannot become a signal row; ``reason`` says why (for the dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_event_time(value: Any) -> datetime:
    """Parse an ISO-8601 event time; a time without a zone is rejected, not guessed.

    Example:
        >>> parse_event_time("2026-11-26T17:00:00.123Z").isoformat()
        '2026-11-26T17:00:00.123000+00:00'
    """
    if not isinstance(value, str):
        raise RejectedEvent(f"event time must be an ISO-8601 string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RejectedEvent(f"event time {value!r} is not ISO-8601") from None
    if moment.tzinfo is None:
        raise RejectedEvent(f"event time {value!r} has no timezone; send UTC with a Z")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class SignalPipeline:
    """A signal's definition plus its transform instance.

    Example:
        >>> from usp_feast.transforms import SelectFields
        >>> class Pick(SelectFields):
        ...     fields = ("listing_id",)
        >>> spec = SignalSpec(name="wishlist", owner="t", source={"topic": "events.w"},
        ...     fields={"listing_id": "int"}, transform="m.Pick", retention="1d", validation="w")
        >>> event = {"event_id": "e1", "event_ts": "2026-11-26T17:00:00Z", "user_id": 4,
        ...          "listing_id": 9}
        >>> row = SignalPipeline(spec, Pick()).process(event)
        >>> row["user_id"], row["listing_id"]
        (4, 9)
    """

    spec: SignalSpec
    transform: Any

    def process(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """The signal row of an event (None when the transform drops it).

        Raises:
            RejectedEvent: Missing identity fields, a bad event time, a transform failure, or
                transform output that does not match the definition's fields.
        """
        spec = self.spec
        user = event.get(spec.entity_key)
        if isinstance(user, bool) or not isinstance(user, int) or user <= 0:
            raise RejectedEvent(f"{spec.entity_key} must be a positive integer, got {user!r}")
        event_id = event.get(spec.event_id)
        if not isinstance(event_id, str) or not event_id or "\x1f" in event_id:
            raise RejectedEvent(f"{spec.event_id} must be a non-empty string, got {event_id!r}")
        event_time = parse_event_time(event.get(spec.event_time))
        extra = self.transform.validate(event) if hasattr(self.transform, "validate") else []
        if extra:
            raise RejectedEvent("; ".join(extra))
        try:
            fields = self.transform.transform(event)
        except Exception as exc:  # user code: any failure rejects this event, not the job
            raise RejectedEvent(f"transform {spec.transform} failed: {exc!r}") from exc
        if fields is None:
            return None
        self._check_output(fields)
        return {"user_id": user, "event_id": event_id, "event_ts": event_time, **fields}

    def _check_output(self, fields: Mapping[str, Any]) -> None:
        missing = [name for name in self.spec.fields if name not in fields]
        if missing:
            raise RejectedEvent(f"transform output lacks {', '.join(missing)}")
        for name, kind in self.spec.fields.items():
            value = fields[name]
            if value is None:
                continue
            allowed = _PYTHON_TYPES[kind]
            if not isinstance(value, allowed) or (kind != "bool" and isinstance(value, bool)):
                raise RejectedEvent(
                    f"transform output {name}={value!r} is not of declared type {kind}"
                )
