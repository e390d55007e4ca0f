"""The interface of a signal's transform class: the only code a product team writes.

A transform receives one validated raw event (a dict decoded from JSON) and returns the
signal's fields, or None to drop the event. The platform adds ``user_id``, ``event_id`` and
``event_ts`` to every row, so a transform returns only the definition's ``fields``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["SelectFields", "SignalTransform"]


class SignalTransform:
    """Base class of transforms.

    Example:
        >>> class Lowercase(SignalTransform):
        ...     def transform(self, event):
        ...         return {"query": event["query"].lower()}
        >>> Lowercase().transform({"query": "Paris"})
        {'query': 'paris'}

    """

    def transform(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Turn a raw event into the signal's fields, or None to drop it."""
        raise NotImplementedError

    def validate(self, event: Mapping[str, Any]) -> list[str]:
        """Extra checks beyond the expectation suite; return one reason per failure."""
        return []


class SelectFields(SignalTransform):
    """Copy the listed fields of the event unchanged (set ``fields`` in a subclass).

    Example:
        >>> class ViewFields(SelectFields):
        ...     fields = ("listing_id", "city")
        >>> ViewFields().transform({"listing_id": 7, "city": "Rome", "extra": 1})
        {'listing_id': 7, 'city': 'Rome'}

    """

    fields: ClassVar[tuple[str, ...]] = ()

    def transform(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """Project the event onto ``fields``."""
        return {name: event.get(name) for name in self.fields}
