"""Thin PyFlink adapter of a session engagement job: keyed state and timers around the core.

Per definition, the pipeline of :mod:`usp_feast.flink_keyed` with:

* SessionEngagement: the user's :class:`~usp_feast.engagements.SessionWindowState` (session
  windows) or :class:`~usp_feast.windows.WindowState` (sliding windows) in keyed state, one
  event-time timer at the logic's deadline. Each event yields the user's current state (what
  readers are served while the session or window is open); each timer yields the summaries of
  what closed.
* WriteEngagement: current state per user into the store, summaries into history (through
  Feast) and the offline Parquet store; the summaries then go to Kafka ``usp.session.<name>``.
* Input that is not a signal row, carries bad data, or is late beyond the allowed lateness is
  not applied: it goes to ``usp.late.session.<name>`` with the reason, and is counted.

After a restart from a checkpoint, replayed input rebuilds the same state; summaries keep their
record ids (``<name>:<start ms>``), so readers see new versions, not duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment

from usp_feast.flink import JobRuntime, config_metrics, release_metrics
from usp_feast.flink_keyed import (
    LATE,
    BatchWriter,
    LateCounter,
    add_keyed_pipeline,
    as_messages,
    aside,
    keep_one_timer,
    measured,
    stamped,
    timer_for,
)
from usp_feast.job_metrics import JobIdentity
from usp_feast.jobs import SessionJobConfig
from usp_feast.versions import from_micros

__all__ = ["add_session"]


def add_session(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: SessionJobConfig,
    runtime: JobRuntime,
) -> None:
    """Add one session engagement's pipeline to the job."""
    add_keyed_pipeline(
        t_env,
        config,
        runtime,
        process=SessionEngagement(config, runtime.repo, runtime.identity),
        write=WriteEngagement(runtime.repo, config, runtime.identity),
        stage="engagement",
        label=config.session,
        output_topic=config.session_topic,
    )


class SessionEngagement(KeyedProcessFunction):
    """Keyed by user: applies each event and timer to the user's state with the pure core.

    One event-time timer per user, at the core's deadline (see :func:`timer_for`).
    """

    def __init__(self, config: SessionJobConfig, repo: Path, job: JobIdentity) -> None:
        self.config = config
        self.repo = repo
        self.job = job
        self.logic: Any = None
        self.sessions = True
        self.fields: tuple[str, ...] = ()
        self.state: Any = None
        self.signal_of: dict[str, str] = {}
        self.late: Any = None
        self.metrics: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the logic from the definition; declare the keyed state."""
        from usp_feast.definitions import load_definitions
        from usp_feast.engagements import SessionWindowLogic
        from usp_feast.windows import SlidingWindowLogic

        spec = load_definitions(self.repo, check_imports=False).session(self.config.session)
        aggregates = spec.aggregates()
        self.sessions = spec.kind == "session"
        self.logic = (
            SessionWindowLogic(spec.session_spec(), aggregates, spec.allowed_lateness)
            if self.sessions
            else SlidingWindowLogic(spec.window_spec(), aggregates)
        )
        # Only the fields the aggregates read are kept in state.
        self.fields = tuple(sorted({a.field for a in aggregates.values() if a.field}))
        self.signal_of = {i.topic: i.signal for i in self.config.inputs}
        self.state = runtime_context.get_state(
            ValueStateDescriptor("engagement", Types.PICKLED_BYTE_ARRAY())
        )
        self.late = LateCounter(runtime_context, "arrived after their allowed lateness (dropped)")
        self.metrics = config_metrics(self.config, self.job)

    def close(self) -> None:
        """Let the job's metrics go once this pipeline's last task here has closed."""
        if self.metrics is not None:
            release_metrics(self.config, self.job)

    @measured
    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        """Apply one signal event of the current user; yield the user's current state."""
        import orjson

        from usp_feast.aggregates import AggregateError
        from usp_feast.engagements import SessionWindowState, session_payload, window_payload
        from usp_feast.windows import WindowState

        text, topic = value
        at = ctx.timestamp()
        try:
            row = orjson.loads(text)
            event_id = str(row["event_id"])
            fields = {name: row.get(name) for name in self.fields}
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            # Signal topics carry rows the signal jobs wrote; anything else is set aside.
            yield LATE, self._aside(topic, text, f"not a signal row ({exc!r}); not applied")
            return
        watermark = ctx.timer_service().current_watermark() + 1
        saved = self.state.value()
        state, timer = saved if saved else (None, None)
        try:
            if self.sessions:
                state = state or SessionWindowState()
                added = self.logic.add(
                    state, fields, event_id, self.signal_of[topic], at, watermark
                )
                late, current = added.late, added.current and session_payload(added.current)
            else:
                state = state or WindowState()
                fields["event_ts"] = from_micros(at * 1000)
                late = self.logic.add(state, fields, at, watermark).late
                current = None if late else window_payload(self.logic, state, at)
        except AggregateError as exc:
            yield LATE, self._aside(topic, text, f"{exc}; not applied")
            return
        if late:
            self.late.add()
            reason = (
                f"event time {at} ms is beyond the allowed lateness (watermark {watermark - 1} "
                "ms); not applied"
            )
            yield LATE, self._aside(topic, text, reason)
            return
        timer = keep_one_timer(ctx, timer, timer_for(self.logic.deadline(state)))
        self.state.update((state, timer))
        if current is not None:
            yield stamped({"user_id": ctx.get_current_key(), "current": current})

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """The watermark reached the deadline: yield the summaries of what closed."""
        from usp_feast.engagements import Engagement

        saved = self.state.value()
        if not saved:
            return
        state, _ = saved
        closed = self.logic.fire(state, timestamp + 1)
        timer = keep_one_timer(ctx, None, timer_for(self.logic.deadline(state)))
        self.state.update((state, timer))
        user = ctx.get_current_key()
        for item in closed:
            engagement = (
                item
                if self.sessions
                else Engagement(item.start_ms, None, item.end_ms, item.values, True, item.update)
            )
            row = engagement.to_row(self.config.session, user)
            yield stamped({"closed": row})

    def _aside(self, topic: str, text: str, reason: str) -> str:
        return aside({"session": self.config.session}, topic, text, reason)


class WriteEngagement(BatchWriter):
    """Writes current state and summaries; the summaries go on to the session topic."""

    def make_sink(self) -> Any:
        """State, history and offline parts of the engagement."""
        from usp_feast.feast_sink import EngagementSink

        return EngagementSink(self.repo, self.definition)

    def published(self, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
        """The closed summaries, at the time each closed."""
        return as_messages([m["closed"] for m in rows if "closed" in m])
