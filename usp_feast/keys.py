"""The Redis key layout.

Every key of one entity carries the entity in a hash tag, ``usp:<project>:{<entity>}:<view>``,
so all of a user's signals live in one Redis Cluster slot and a multi-key read of one user is
a single-slot operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "current_key",
    "current_pattern",
    "entity_tag",
    "project_pattern",
    "signal_key",
    "view_pattern",
]


def entity_tag(values: Sequence[Any]) -> str:
    """The hash-tag text of an entity: its join-key values joined by commas."""
    return ",".join(str(v) for v in values)


def signal_key(prefix: str, project: str, entity: str, view: str) -> str:
    """Key of the sorted set holding every version of ``view``'s records for one entity.

    Example:
        >>> signal_key("usp", "demo", "42", "search")
        'usp:demo:{42}:search'

    """
    return f"{prefix}:{project}:{{{entity}}}:{view}"


def current_key(prefix: str, project: str, entity: str, view: str) -> str:
    """Key of the one document holding an entity's current state of a session view.

    Example:
        >>> current_key("usp", "demo", "42", "browse_session")
        'usp:demo:{42}:browse_session:current'

    """
    return f"{signal_key(prefix, project, entity, view)}:current"


def current_pattern(prefix: str, project: str, view: str) -> str:
    """SCAN pattern matching every entity's current-state key of one view."""
    return f"{view_pattern(prefix, project, view)}:current"


def view_pattern(prefix: str, project: str, view: str) -> str:
    """SCAN pattern matching every entity's key of one view."""
    return f"{prefix}:{project}:{{*}}:{view}"


def project_pattern(prefix: str, project: str) -> str:
    """SCAN pattern matching every key of one project."""
    return f"{prefix}:{project}:*"
