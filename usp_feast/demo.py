"""The foundation demo: example traffic into the versioned store through Feast, read back.

Events go through the signal pipelines and Feast's push API, then are read back through
Feast and the query API. The streaming jobs (Kafka → Flink) replace the direct push in a
later milestone; everything after the push (store, Feast reads, history API) is the real path.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from usp_feast.definitions import load_definitions, load_transform
from usp_feast.pipeline import RejectedEvent, SignalPipeline
from usp_feast.query import SignalClient
from usp_feast.traffic import TrafficConfig, generate

__all__ = ["DemoSummary", "run_demo"]

logger = logging.getLogger(__name__)
PUSH_BATCH = 2_000


@dataclass
class DemoSummary:
    """What the demo did, for the closing table and for tests."""

    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    unrouted: int = 0
    users: list[int] = field(default_factory=list)


def run_demo(repo: Path, *, users: int, seed: int, console: Console) -> DemoSummary:
    """Apply the repository, push generated traffic through Feast and show what readers see."""
    import pandas as pd
    from feast import FeatureStore

    from usp_feast.compile import repo_objects

    definitions = load_definitions(repo)
    console.rule("[bold]1. feast apply")
    store = FeatureStore(repo_path=str(repo))
    objects = list(repo_objects(repo).values())
    store.apply(objects)
    console.print(f"registered {len(objects)} Feast objects for {len(definitions.signals)} signals")

    console.rule("[bold]2. example traffic → validate + transform → Feast push")
    pipelines: dict[str, list[SignalPipeline]] = defaultdict(list)
    for spec in definitions.signals:
        pipelines[spec.source.topic].append(SignalPipeline(spec, load_transform(spec, repo)))
    summary = DemoSummary()
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in generate(TrafficConfig(users=users, seed=seed)):
        summary.events += 1
        routes = pipelines.get(raw.topic)
        if not routes:
            summary.unrouted += 1  # e.g. listing_update feeds the join signal, not a signal
            continue
        for pipeline in routes:
            try:
                row = pipeline.process(raw.payload)
            except RejectedEvent as exc:
                summary.rejected[f"{pipeline.spec.name}: {exc.reason}"] += 1
                continue
            if row is not None:
                rows[pipeline.spec.name].append(row)
    for spec in definitions.signals:
        batch = rows.get(spec.name, [])
        for start in range(0, len(batch), PUSH_BATCH):
            store.push(spec.push_source, pd.DataFrame(batch[start : start + PUSH_BATCH]))
        summary.rows[spec.name] = len(batch)
    table = Table("signal", "rows pushed", title=f"{summary.events} events generated")
    for name, count in sorted(summary.rows.items()):
        table.add_row(name, str(count))
    console.print(table)
    if summary.rejected:
        rejects = Table("rejected (signal: reason)", "events")
        for reason, count in summary.rejected.most_common(8):
            rejects.add_row(reason, str(count))
        console.print(rejects)

    client = SignalClient.from_repo(repo)
    shown = sorted({r["user_id"] for r in rows.get("search", [])})[:3]
    summary.users = shown
    console.rule("[bold]3. SignalClient.recent: each user's last events, newest first")
    for user in shown:
        for spec in definitions.signals:
            events = client.recent(user, spec.name, within=timedelta(hours=3), limit=3)
            if not events:
                continue
            view = Table(title=f"user {user} · {spec.name}", title_justify="left")
            for column in ("event_ts", "event_id", *spec.fields):
                view.add_column(column)
            for event in events:
                data = event.to_dict()
                view.add_row(
                    *(str(data.get(c, "")) for c in ("event_ts", "event_id", *spec.fields))
                )
            console.print(view)

    console.rule("[bold]4. Feast get_online_features: newest version per user")
    features = [
        f"{spec.name}:{name}" for spec in definitions.signals for name in list(spec.fields)[:2]
    ]
    online = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in shown], full_feature_names=True
    ).to_dict()
    grid = Table("feature", *(f"user {u}" for u in shown))
    for name in features:
        grid.add_row(name, *(str(v) for v in online[name.replace(":", "__")]))
    console.print(grid)

    console.rule("[bold]5. replay: push the same search rows again")
    if shown and rows.get("search"):
        user = shown[0]
        before = len(client.recent(user, "search", limit=1000))
        replay = [r for r in rows["search"] if r["user_id"] == user]
        store.push("search_push", pd.DataFrame(replay))
        after = len(client.recent(user, "search", limit=1000))
        stored = len(client.store.versions("search", str(user)))
        console.print(
            f"user {user}: readers see {before} → {after} search events; "
            f"Redis holds {stored} versions (append-only, collapsed per event id at read)"
        )
    return summary
