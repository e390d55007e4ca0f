"""Thin PyFlink adapter of a segment job: Flink keyed state and timers around the pure core.

Per segment, the pipeline of :mod:`usp_feast.flink_keyed` with:

* SegmentMembership: MembershipState in keyed state, the expiry as an event-time timer,
  SegmentLogic applied to each event and timer; emits membership changes.
* WriteMembership: history through Feast, members index, offline Parquet part files per
  checkpoint; then the changes go to Kafka ``usp.segment.<name>``.
* Input set aside (not a signal row) or applied late (behind the watermark), with the reason,
  goes to ``usp.late.segment.<name>``.

Replayed input produces the same change ids (see :mod:`usp_feast.segments`), so readers see
no duplicates after a restart from a checkpoint.
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
    aside,
    keep_one_timer,
    measured,
    stamped,
)
from usp_feast.job_metrics import JobIdentity
from usp_feast.jobs import SegmentJobConfig

__all__ = ["add_segment"]


def add_segment(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    config: SegmentJobConfig,
    runtime: JobRuntime,
) -> None:
    """Add one segment's pipeline to the job."""
    add_keyed_pipeline(
        t_env,
        config,
        runtime,
        process=SegmentMembership(config, runtime.repo, runtime.identity),
        write=WriteMembership(runtime.repo, config, runtime.identity),
        stage="membership",
        label=config.segment,
        output_topic=config.segment_topic,
    )


class SegmentMembership(KeyedProcessFunction):
    """Keyed by user: loads the user's MembershipState, applies the logic, saves it back.

    The state is saved with the time of the user's event-time timer, which fires at or before
    :meth:`SegmentLogic.deadline` (expiry, or the end of a start delay).
    """

    def __init__(self, config: SegmentJobConfig, repo: Path, job: JobIdentity) -> None:
        self.config = config
        self.repo = repo
        self.job = job
        self.logic: Any = None
        self.state: Any = None
        self.signal_of: dict[str, str] = {}
        self.late: Any = None
        self.metrics: Any = None

    def open(self, runtime_context: RuntimeContext) -> None:
        """Build the logic from the definition; declare the keyed state."""
        from usp_feast.definitions import load_definitions
        from usp_feast.segments import SegmentLogic

        spec = load_definitions(self.repo, check_imports=False).segment(self.config.segment)
        self.logic = SegmentLogic(spec.rules())
        self.signal_of = {i.topic: i.signal for i in self.config.inputs}
        self.state = runtime_context.get_state(
            ValueStateDescriptor("membership", Types.PICKLED_BYTE_ARRAY())
        )
        self.late = LateCounter(runtime_context, "arrived behind the watermark (applied)")
        self.metrics = config_metrics(self.config, self.job)

    def close(self) -> None:
        """Let the job's metrics go once this pipeline's last task here has closed."""
        if self.metrics is not None:
            release_metrics(self.config, self.job)

    @measured
    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        """Apply one signal event of the current user."""
        import orjson

        from usp_feast.segments import SegmentEvent

        text, topic = value
        at = ctx.timestamp()
        try:
            row = orjson.loads(text)
            event = SegmentEvent(self.signal_of[topic], str(row["event_id"]), at, row)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # Signal topics carry rows the signal jobs wrote; anything else is set aside.
            yield LATE, self._aside(topic, text, f"not a signal row ({exc!r}); not applied")
            return
        watermark = ctx.timer_service().current_watermark()
        if at <= watermark:
            # Still applied (the logic treats what it contradicts as stale), but decisions
            # the watermark already passed (an expiry) are not revisited: count it and
            # keep a copy on the late topic for audit.
            self.late.add()
            reason = f"event time {at} ms arrived behind the watermark {watermark} ms; applied"
            yield LATE, self._aside(topic, text, reason)
        yield from self._apply(ctx, lambda state: self.logic.on_event(state, event))

    def _aside(self, topic: str, text: str, reason: str) -> str:
        return aside({"segment": self.config.segment}, topic, text, reason)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Any:
        """Event time reached a deadline: start or expire the membership."""
        yield from self._apply(ctx, lambda state: self.logic.advance(state, timestamp), timestamp)

    def _apply(self, ctx: Any, step: Any, fired: int | None = None) -> Any:

        from usp_feast.segments import MembershipState

        saved = self.state.value()
        state = MembershipState.restore(saved[0] if saved else None)
        timer = None if saved is None or saved[1] == fired else saved[1]
        changes = step(state)
        timer = keep_one_timer(ctx, timer, self.logic.deadline(state))
        self.state.update((state.snapshot(), timer))
        user = ctx.get_current_key()
        for change in changes:
            yield stamped(change.to_row(self.config.segment, user))


class WriteMembership(BatchWriter):
    """Writes membership changes; they go on to the segment topic."""

    def make_sink(self) -> Any:
        """History, members index and offline parts of the segment."""
        from usp_feast.feast_sink import SegmentSink

        return SegmentSink(self.repo, self.definition)

    def published(self, rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[int]]:
        """Every change, at its event time."""
        import orjson

        from usp_feast.segments import message_from_row, row_event_ms

        return [orjson.dumps(message_from_row(r)).decode() for r in rows], [
            row_event_ms(r) for r in rows
        ]
