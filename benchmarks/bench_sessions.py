"""Session engagement job: events/s, current-session freshness, Redis memory per active user.

1. Throughput: N signal rows (views, and a round of searches in every five, over U users,
   event time increasing by 1 ms from at most 5 minutes ago) are put on fresh
   ``usp.signal.view`` / ``usp.signal.search`` topics, then ONE job running the session
   definition ``browse_session`` (30 min gap, over search + view) and the sliding one
   ``views_10m`` (10 min every 5 min, over view) drains them. Progress is read from the users'
   current-state documents: ``values.events`` of ``browse_session`` (+1 per row) plus, per
   user, the largest window ``count`` of ``views_10m`` (+1 per view row). The rate is taken
   between 10 % and 90 % of the expected total; one "event" is one signal row applied to one
   definition. Baseline in the same run: the bare PyFlink job (Kafka → Python map → discard)
   over the same view topic.
2. Freshness: one job runs the ``view`` and ``search`` signal jobs and both session jobs (as
   ``usp run --all`` does); raw ``events.listing_view`` events of new users are produced at a
   steady 200/s (the first 15 s are warm-up, not measured) and a reader polls Feast
   (``get_online_features(["browse_session:events"])``) until each probe user's current
   session counts its view: produce of the raw event → served.
3. Memory: ``MEMORY USAGE`` of every user's current-state document of both definitions (the
   ones the throughput job wrote, or with ``--only memory`` the same documents computed by the
   pure core and written with ``EngagementSink``), and of closed summaries in history (1,000
   written with ``EngagementSink``). Baseline in the same run: the bytes per stored ``view``
   signal row (written with ``FeastSink``, the signal job's path).

    .venv/bin/python benchmarks/bench_sessions.py [--quick] [--only throughput|freshness|memory]
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count_keys, emit, load_after, log, machine_info, ratio
from _keyed import Bench, Probe, drain, freshness, parse_args, prepare, put_signal_rows, signal_row
from bench_streaming import bare_job_rate, rate_between

from usp_feast.definitions import load_definitions
from usp_feast.keys import current_key

SESSION = "browse_session"
WINDOWS = "views_10m"
USERS = 2000
SUMMARY_USERS, SUMMARIES_PER_USER, SUMMARY_FIRST_USER = 100, 10, 5_000_001
BASELINE_USERS, ROWS_PER_USER, BASELINE_FIRST_USER = 500, 10, 6_000_001

# The throughput job's current documents must outlive its start and drain (see timeline).
DRAIN_DOC_LIFE_MS = 480_000
_MS = timedelta(milliseconds=1)

Rows = list[tuple[str, int, dict]]


def kind_of(i: int) -> str:
    """The signal of the ``i``-th row: users take turns, every fifth round searches."""
    return "search" if (i // USERS) % 5 == 4 else "view"


def timeline(count: int, repo: Path, min_life_ms: int) -> tuple[int, int]:
    """When the first of ``count`` rows happens, and when the ``views_10m`` documents expire.

    A user's ``views_10m`` document expires at the end of its last window and Redis then
    deletes it, so the job must be done with every row before then (the progress counter
    reads the documents). Every user's last view is put in the current 5-minute step: all
    documents then expire together, at the step's start + 10 minutes. When less than
    ``min_life_ms`` of that is left, the run waits for the next step. Rows start 5 minutes
    ago, or later when that keeps a last view out of the current step; none is in the future.
    """
    window = load_definitions(repo).session(WINDOWS).window_spec()
    step, size = window.step // _MS, window.size // _MS
    last_view: dict[int, int] = {}
    for i in range(count):
        if kind_of(i) == "view":
            last_view[i % USERS] = i
    settled = min(last_view.values())  # every user's last view is at or after this row
    while True:
        now = int(time.time() * 1000)
        boundary = now - now % step
        if count - settled < now - boundary <= size - min_life_ms:
            first = max(now - max(300_000, count), boundary - settled)
            return first, boundary + size
        if now - boundary > count - settled:
            boundary += step
        wait = (boundary + count - settled + 500 - now) / 1000
        log(f"waiting {wait:.0f} s: current documents must live {min_life_ms // 1000} s")
        time.sleep(wait)


def signal_rows(count: int, first_ms: int) -> Rows:
    """(signal, event ms, row): round-robin over users, time increasing by 1 ms."""
    return [
        (kind_of(i), first_ms + i, signal_row(kind_of(i), i, 1 + i % USERS, first_ms + i))
        for i in range(count)
    ]


def throughput(bench: Bench, rows: Rows, expires_ms: int) -> dict:
    """Drain of the rows by one job running both definitions (the baseline comes later)."""
    views = sum(1 for kind, _, _ in rows if kind == "view")
    total = len(rows) + views
    log(f"producing {len(rows)} signal rows ({views} views): {total} events to apply")
    put_signal_rows(bench.stack.kafka, bench.prefix, rows)

    log("session job: browse_session + views_10m")
    users = [str(u) for u in range(1, USERS + 1)]
    per_view: list[tuple[float, int, int]] = []

    def applied() -> int:
        store = bench.client.store
        events = sum(doc["values"]["events"] for doc in store.current(SESSION, users) if doc)
        counts = sum(
            max(window[2]["count"] for window in doc["windows"])
            for doc in store.current(WINDOWS, users)
            if doc
        )
        per_view.append((time.monotonic(), events, counts))
        return events + counts

    # Past the documents' expiry the count falls: stop waiting a little before it.
    timeout = min(900.0, (expires_ms - time.time() * 1000) / 1000 - 5)
    names = [f"session_{SESSION}", f"session_{WINDOWS}"]
    _, rate = drain(bench, names, applied, total, timeout)
    return {
        "signal_rows": len(rows),
        "view_rows": views,
        "search_rows": len(rows) - views,
        "events_to_apply": total,
        "applied": {
            f"{SESSION}_events": per_view[-1][1] if per_view else 0,
            f"{WINDOWS}_count": per_view[-1][2] if per_view else 0,
        },
        "session_job_events_per_s": _rounded(rate),
        f"{SESSION}_events_per_s": _rounded(
            rate_between([(t, e) for t, e, _ in per_view], len(rows))
        ),
        f"{WINDOWS}_events_per_s": _rounded(rate_between([(t, c) for t, _, c in per_view], views)),
        "unit": "one signal row applied to one definition (a view counts for both)",
    }


def bare_baseline(bench: Bench, found: dict) -> dict:
    """The bare PyFlink job over the same view topic, and the ratio to the session job."""
    log("baseline: bare PyFlink job over the view signal topic")
    bare = bare_job_rate(
        bench.stack,
        f"{bench.prefix}usp.signal.view",
        bench.run,
        found["view_rows"],
        bench.work,
        bench.raw_redis,
    )
    rate = found["session_job_events_per_s"]
    return {
        "bare_job_events_per_s": _rounded(bare),
        "ratio_session_to_bare": None if not rate or not bare else ratio(rate, bare),
    }


def _rounded(rate: float | None) -> int | None:
    return None if rate is None else round(rate)


def write_current_docs(bench: Bench, rows: Rows) -> None:
    """The documents the job would leave, computed by the pure core (for ``--only memory``)."""
    from usp_feast.engagements import (
        SessionWindowLogic,
        SessionWindowState,
        session_payload,
        window_payload,
    )
    from usp_feast.feast_sink import EngagementSink
    from usp_feast.windows import SlidingWindowLogic, WindowState

    definitions = load_definitions(bench.repo)
    session, window = definitions.session(SESSION), definitions.session(WINDOWS)
    sessions = SessionWindowLogic(
        session.session_spec(), session.aggregates(), session.allowed_lateness
    )
    windows = SlidingWindowLogic(window.window_spec(), window.aggregates())
    states: dict[int, tuple[SessionWindowState, WindowState]] = {}
    docs: dict[str, dict[int, dict]] = {SESSION: {}, WINDOWS: {}}
    for kind, at, row in rows:
        user = row["user_id"]
        session_state, window_state = states.setdefault(user, (SessionWindowState(), WindowState()))
        added = sessions.add(session_state, row, row["event_id"], kind, at, watermark_ms=0)
        docs[SESSION][user] = session_payload(added.current)
        if kind == "view":
            moment = datetime.fromtimestamp(at / 1000, UTC)
            windows.add(window_state, {**row, "event_ts": moment}, at, watermark_ms=0)
            docs[WINDOWS][user] = window_payload(windows, window_state, at)
    for name, by_user in docs.items():
        EngagementSink(bench.repo, name).write(
            [{"user_id": u, "current": d} for u, d in by_user.items()]
        )


def memory(bench: Bench) -> dict:
    """Bytes per active user (current documents) and per closed summary, vs a signal row."""
    store = bench.client.store
    result: dict = {"current_state": {}}
    for view in (SESSION, WINDOWS):
        keys = [current_key(store.prefix, store.project, str(u), view) for u in range(1, USERS + 1)]
        sizes = _sizes(bench, keys)
        result["current_state"][view] = {
            "users_with_document": sizes["keys"],
            "bytes_per_user": _per(sizes["memory"], sizes["keys"]),
            "document_bytes": _per(sizes["payload"], sizes["keys"]),
        }
    result["current_state"]["bytes_per_active_user"] = round(
        sum(v["bytes_per_user"] or 0 for v in result["current_state"].values()), 1
    )
    summaries = _history_summaries(bench)
    baseline = _view_rows(bench)
    result["closed_summaries"] = summaries
    result["baseline_view_signal_rows"] = baseline
    result["ratio_summary_to_signal_row"] = ratio(
        summaries["bytes_per_summary"], baseline["bytes_per_row"]
    )
    result["ratio_active_user_to_signal_row"] = ratio(
        result["current_state"]["bytes_per_active_user"], baseline["bytes_per_row"]
    )
    return result


def _sizes(bench: Bench, keys: list[str]) -> dict:
    """Totals over the existing ``keys``: ``MEMORY USAGE`` (every nested value counted), payload
    bytes (the document, or the sorted set's members, without Redis' own overhead) and members.
    """
    with bench.raw_redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.type(key)
        replies = pipe.execute()
    found = [(k, m, t) for k, m, t in zip(keys, replies[::2], replies[1::2], strict=True) if m]
    with bench.raw_redis.pipeline(transaction=False) as pipe:
        for key, _, kind in found:
            if kind == b"zset":
                pipe.zrange(key, 0, -1)
            else:
                pipe.get(key)
        values = [v if isinstance(v, list) else [v] for v in pipe.execute()]
    return {
        "keys": len(found),
        "memory": sum(m for _, m, _ in found),
        "payload": sum(len(item) for items in values for item in items),
        "items": sum(map(len, values)),
    }


def _per(total: int, count: int) -> float | None:
    return round(total / count, 1) if count else None


def _history_summaries(bench: Bench) -> dict:
    """1,000 closed ``browse_session`` summaries (10 per user, made by the pure core)."""
    from usp_feast.engagements import SessionWindowLogic, SessionWindowState
    from usp_feast.feast_sink import EngagementSink

    spec = load_definitions(bench.repo).session(SESSION)
    logic = SessionWindowLogic(spec.session_spec(), spec.aggregates(), spec.allowed_lateness)
    now = int(time.time() * 1000)
    first = now - 86_400_000
    messages = []
    for n in range(SUMMARY_USERS):
        user = SUMMARY_FIRST_USER + n
        state = SessionWindowState()
        for visit in range(SUMMARIES_PER_USER):
            # A visit an hour: a search, then four views a minute apart.
            for step, kind in enumerate(("search", "view", "view", "view", "view")):
                i = n * 1000 + visit * 10 + step
                at = first + visit * 3_600_000 + step * 60_000
                logic.add(state, signal_row(kind, i, user, at), f"e{i}", kind, at, watermark_ms=0)
        for engagement in logic.fire(state, now):
            messages.append({"closed": engagement.to_row(SESSION, user)})
    EngagementSink(bench.repo, SESSION).write(messages)
    stored, per_summary, member = _history(bench, SESSION, SUMMARY_FIRST_USER, SUMMARY_USERS)
    return {
        "summaries": stored,
        "users": SUMMARY_USERS,
        "bytes_per_summary": per_summary,
        "member_bytes": member,
    }


def _view_rows(bench: Bench) -> dict:
    """The baseline: 5,000 ``view`` signal rows (10 per user) through the signal job's sink."""
    from usp_feast.feast_sink import FeastSink

    first = int(time.time() * 1000) - 3_600_000
    rows = []
    for n in range(BASELINE_USERS):
        for k in range(ROWS_PER_USER):
            i = n * ROWS_PER_USER + k
            rows.append(signal_row("view", i, BASELINE_FIRST_USER + n, first + i * 100))
    FeastSink(bench.repo, "view").write(rows)
    stored, per_row, member = _history(bench, "view", BASELINE_FIRST_USER, BASELINE_USERS)
    return {
        "rows": stored,
        "users": BASELINE_USERS,
        "bytes_per_row": per_row,
        "member_bytes": member,
    }


def _history(
    bench: Bench, view: str, first_user: int, users: int
) -> tuple[int, float | None, float | None]:
    """Records stored in ``view`` for the users, and bytes per record: Redis' and the member's."""
    store = bench.client.store
    sizes = _sizes(bench, [store.key(view, str(first_user + n)) for n in range(users)])
    records = sizes["items"]
    return records, _per(sizes["memory"], records), _per(sizes["payload"], records)


def main() -> None:
    args = parse_args(["throughput", "freshness", "memory"])
    bench = prepare("sessions", "sess", ("search", "view"), segments=False, sessions=True)
    result: dict = {"benchmark": "sessions", "machine": machine_info(bench.raw_redis)}
    try:
        if args.only in (None, "throughput", "memory"):
            life = 60_000 if args.only == "memory" else DRAIN_DOC_LIFE_MS
            first, expires = timeline(args.events, bench.repo, life)
            rows = signal_rows(args.events, first)
        if args.only in (None, "throughput"):
            result["throughput"] = throughput(bench, rows, expires)
            log(f"throughput: {result['throughput']}")
        if args.only == "memory":
            log("writing the current documents of the same rows through EngagementSink")
            write_current_docs(bench, rows)
        if args.only in (None, "memory"):
            result["memory"] = memory(bench)
            log(f"memory: {result['memory']}")
        if args.only in (None, "throughput"):
            # After the memory snapshot: the job's documents do not outlive it by much.
            baseline = bare_baseline(bench, result["throughput"])
            result["throughput"].update(baseline)
            log(f"baseline: {baseline}")
        if args.only in (None, "freshness"):
            probe = Probe("view", "events.listing_view", f"{SESSION}:events", "current_session")
            result["freshness_produce_to_current_session"] = freshness(bench, probe, args.quick)
            log(f"freshness: {result['freshness_produce_to_current_session']}")
    finally:
        project = bench.client.store.project
        result["cleanup"] = bench.finish()
        result["cleanup"]["keys_left"] = count_keys(bench.raw_redis, f"usp:{project}:*".encode())
        result["machine"]["loadavg_1m_after"] = load_after()
    emit(result)


if __name__ == "__main__":
    main()
