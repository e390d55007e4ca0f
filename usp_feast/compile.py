"""Compile definitions into Feast objects (pure: no I/O beyond reading the definitions).

Per signal ``search``: a Parquet ``FileSource`` ``search_source``, a ``PushSource``
``search_push`` backed by it, and a ``StreamFeatureView`` ``search`` whose rows are the
signal's events, all keyed by the shared ``user`` entity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feast import Entity, Field, FileSource, PushSource, StreamFeatureView, ValueType
from feast.types import Bool, FeastType, Float64, Int64, String, UnixTimestamp

from usp_feast.definitions import Definitions, load_definitions
from usp_feast.durations import format_duration
from usp_feast.online_store import RETENTION_TAG
from usp_feast.spec import SignalSpec

# Feast warns that every StreamFeatureView is alpha, on each construction and registry load,
# and its own import resets filters to show it; it says nothing about a user's definitions.
warnings.filterwarnings(
    "ignore", message="Stream feature views are experimental", category=RuntimeWarning
)

__all__ = ["USER", "FeastObjects", "compile_definitions", "repo_objects", "signal_view"]

USER = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A user of the product; every signal is keyed by it.",
)

FEAST_TYPES: dict[str, FeastType] = {
    "string": String,
    "int": Int64,
    "float": Float64,
    "bool": Bool,
    "timestamp": UnixTimestamp,
}


@dataclass(frozen=True)
class FeastObjects:
    """Everything ``feast apply`` registers for a set of definitions."""

    entities: tuple[Entity, ...]
    sources: tuple[Any, ...]
    views: tuple[StreamFeatureView, ...]

    def by_name(self) -> dict[str, Any]:
        """Objects keyed by their Feast name, for a repository module's globals."""
        named: dict[str, Any] = {}
        for obj in (*self.entities, *self.sources, *self.views):
            named[obj.name] = obj
        return named


class SignalView(StreamFeatureView):
    """A StreamFeatureView whose registry copy equals the object it was applied from.

    Stock ``StreamFeatureView`` serializes its schema from a ``set`` (order changes with the
    interpreter's hash seed) and moves inferred entity columns into its features, so the
    copy in the registry never equals a freshly imported view and every ``feast plan``
    reports an update. Sorting the schema, and building the view in the shape inference and a
    proto round trip give it, keeps a second ``feast plan``/``feast apply`` a no-op.
    """

    # The base class stores the schema; here it is derived (sorted), hence the ignore.
    @property
    def schema(self) -> list[Field]:  # type: ignore[override]
        """Entity columns and features, deduplicated and sorted by name."""
        return sorted(set(self.entity_columns + self.features), key=lambda f: f.name)

    def __copy__(self) -> SignalView:
        # The registry diffs a copy; the base class would return a plain StreamFeatureView.
        copied = super().__copy__()
        copied.__class__ = SignalView
        return copied


def signal_view(spec: SignalSpec) -> tuple[Any, Any, SignalView]:
    """The Feast objects of one signal: its file source, push source and view."""
    offline = FileSource(
        name=f"{spec.name}_source",
        path=f"data/signals/{spec.name}.parquet",
        timestamp_field="event_ts",
        description=f"Offline rows of signal {spec.name}",
    )
    schema = [Field(name="event_id", dtype=String)] + [
        Field(name=name, dtype=FEAST_TYPES[kind]) for name, kind in spec.fields.items()
    ]
    view = SignalView(
        name=spec.name,
        source=PushSource(name=spec.push_source, batch_source=offline),
        entities=[USER],
        ttl=spec.online_ttl,
        schema=schema,
        timestamp_field="event_ts",
        online=True,
        description=spec.description,
        owner=spec.owner,
        tags={
            "usp.kind": "signal",
            "usp.topic": spec.source.topic,
            RETENTION_TAG: format_duration(spec.retention),
        },
    )
    # The shape `feast apply` inference and the registry's proto round trip give it.
    view.entity_columns = [Field(name="user_id", dtype=Int64)]
    view = SignalView.from_proto(view.to_proto())
    return view.batch_source, view.stream_source, view


def compile_definitions(definitions: Definitions) -> FeastObjects:
    """Compile every definition; output order follows definition names (deterministic)."""
    sources: list[Any] = []
    views: list[StreamFeatureView] = []
    for spec in sorted(definitions.signals, key=lambda s: s.name):
        offline, push, view = signal_view(spec)
        sources += [offline, push]
        views.append(view)
    return FeastObjects(entities=(USER,), sources=tuple(sources), views=tuple(views))


def repo_objects(repo: Path | str) -> dict[str, Any]:
    """Feast objects of a feature repository, keyed by name.

    A repository registers its definitions with one line in a Python file that ``feast apply``
    imports::

        globals().update(repo_objects(Path(__file__).parent))
    """
    return compile_definitions(load_definitions(repo)).by_name()
