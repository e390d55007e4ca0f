"""Query features: a signal's history turned into Feast features at request time.

A signal definition may declare ``query_features``; the compile step registers them as one
Feast on-demand feature view per signal (``<signal>_history``, Python mode) whose function is
built here. At ``get_online_features`` time Feast hands it the requested users' ``user_id``s, and
it answers each feature with :meth:`SignalClient.aggregate` over the versioned store: the same
bounded, filtered computation as the query API, with no streaming job deployed.

The function travels inside Feast's registry as source text (:func:`history_source`): Feast
0.67 rebuilds a Python-mode function by running its ``udf_string``, so the text calls
:func:`history_function` with plain data (the signal's spec and how to reach the store). That
keeps it deterministic (a second ``feast plan`` shows no change) and independent of pickling.
Connection strings keep their ``${VAR}`` form and are expanded where the features are served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from types import FunctionType
from typing import Any, cast

from usp_feast.aggregates import AggregateSpec
from usp_feast.spec import SignalDefinition

__all__ = ["StoreAddress", "history_function", "history_source", "placeholder"]


@dataclass(frozen=True)
class StoreAddress:
    """Where the versioned store lives, as written in ``feature_store.yaml``."""

    project: str
    connection_string: str | None
    redis_type: str = "redis"
    key_prefix: str = "usp"


def placeholder(kind: str, field_type: str | None) -> Any:
    """A value of the feature's type (Feast infers and checks types by calling the function)."""
    if kind in ("count", "count_distinct"):
        return 0
    if kind in ("top_k", "last_k"):
        return [{"int": 0, "float": 0.0, "bool": False}.get(field_type or "", "")]
    if kind in ("first_ts", "last_ts"):
        return ""
    if kind in ("avg", "duration") or field_type == "float":
        return 0.0
    return 0


_CLIENTS: dict[tuple[StoreAddress, str], Any] = {}


def _client(address: StoreAddress, spec: SignalDefinition) -> Any:
    # One client per serving process: connections are pooled and reused across requests.
    cached = _CLIENTS.get((address, spec.name))
    if cached is None:
        from usp_feast import devstack
        from usp_feast.query import SignalClient
        from usp_feast.store import VersionedStore, connect

        # connect() expands the ${VAR}s and adds the environment's credentials and TLS files.
        url = address.connection_string or devstack.endpoints().redis
        redis_client = connect(url, cluster=address.redis_type == "redis_cluster")
        store = VersionedStore(redis_client, project=address.project, prefix=address.key_prefix)
        cached = _CLIENTS[(address, spec.name)] = SignalClient(store, [spec])
    return cached


def history_function(spec: SignalDefinition, address: StoreAddress) -> FunctionType:
    """The on-demand view's function: ``{"user_id": [...], ...}`` → one list per feature."""
    features = {
        name: (AggregateSpec.parse(f.aggregate), f.within, f.where)
        for name, f in sorted(spec.query_features.items())
    }
    types = dict(spec.fields)
    # Features sharing a window and filter share one read of the history per user. Specs whose
    # results share a key (top_k:city:3 and top_k:city:5) are computed one call each.
    names_by_read: dict[tuple[timedelta, str | None], list[str]] = {}
    for name, (_, within, where) in features.items():
        names_by_read.setdefault((within, where), []).append(name)
    reads = []
    for (within, where), names in names_by_read.items():
        specs = list(dict.fromkeys(features[n][0] for n in names))
        calls = [specs] if len({s.name for s in specs}) == len(specs) else [[s] for s in specs]
        reads.append((within, where, names, calls))

    def compute(inputs: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
        users = inputs.get("user_id")
        if users is None:  # Feast's type inference calls without join keys
            rows = len(next(iter(inputs.values()), []))
            return {
                name: [placeholder(agg.kind, types.get(agg.field or ""))] * rows
                for name, (agg, _, _) in features.items()
            }
        client = _client(address, spec)
        out: dict[str, list[Any]] = {name: [] for name in features}
        for user in users:
            for within, where, names, calls in reads:
                values: dict[str, Any] = {}
                for call in calls:
                    values.update(client.aggregate(user, spec.name, call, within, where=where))
                for name in names:
                    aggregate = features[name][0]
                    value = values[aggregate.name]
                    out[name].append([v for v, _ in value] if aggregate.kind == "top_k" else value)
        return out

    return cast(FunctionType, compute)


def history_source(spec: SignalDefinition, address: StoreAddress) -> str:
    """Python source that, run on its own, defines ``compute`` = :func:`history_function`."""
    model = type(spec).__name__
    return (
        "from usp_feast.query_features import StoreAddress, history_function\n"
        f"from usp_feast.spec import {model}\n"
        "compute = history_function(\n"
        f"    {model}.model_validate_json({spec.model_dump_json()!r}),\n"
        f"    StoreAddress(**{asdict(address)!r}),\n"
        ")\n"
    )
