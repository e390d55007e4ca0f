"""Sliding event-time windows as a pure core: assignment, lateness, firing, serving.

One :class:`WindowState` per user holds the open windows, each with one
:class:`~usp_feast.aggregates.Accumulator` per aggregate. :class:`SlidingWindowLogic` adds events
to it, fires closed windows and says which window to serve now; the Flink operator only loads
and saves the state, registers the timer :meth:`SlidingWindowLogic.deadline` asks for and calls
the logic. Tests drive the same logic with timelines.

Rules (all times are event times in epoch milliseconds):

* **Assignment** is Flink's ``SlidingEventTimeWindows`` with offset 0: an event at ``t`` is in
  every window ``[start, start + size)`` with ``start = t - t mod step - k * step`` for
  ``k = 0 .. size / step - 1``. So an event exactly on a step boundary opens the windows
  starting there and is not in the one ending there. ``mod`` is Python's floor modulo, which is
  Flink's for ``t >= 0`` and keeps ``start <= t < end`` for earlier times too.
* The **watermark** is the event time up to which input is complete: a window with
  ``end <= watermark`` is closed. (A Flink watermark ``W`` promises no more events at or before
  ``W``, so the operator passes ``W + 1``.)
* A closed window **fires** once with its final values; an event that arrives within
  ``allowed_lateness`` of its end still counts and makes it fire again, marked ``update``. A
  window is dropped once ``end + allowed_lateness <= watermark``; an event whose windows are
  all dropped is **late**: reported, not applied.
* **Serving** (:meth:`SlidingWindowLogic.current`) reads the window that ends at the next step
  boundary after ``now``: the last ``size`` of activity, at most one ``step`` ahead of ``now``.
  Of the windows containing ``now`` it is the one that has seen the most of the past; the
  newest-starting one would hold only the time since the last boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from usp_feast.aggregates import Accumulator, AggregateSpec

__all__ = [
    "AddResult",
    "ClosedWindow",
    "SlidingWindowLogic",
    "SlidingWindowSpec",
    "WindowState",
    "WindowValues",
    "named_aggregates",
]

_SNAPSHOT_VERSION = 1
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class SlidingWindowSpec:
    """Windows of ``size`` starting every ``step``, accepting events up to ``allowed_lateness``.

    Args:
        size: Length of each window; a whole multiple of ``step``.
        step: Time between window starts; ``step == size`` gives tumbling windows.
        allowed_lateness: How long after a window's end events still update it.

    Raises:
        ValueError: When a duration is not a whole number of milliseconds, ``size`` or ``step``
            is not positive, ``size`` is not a multiple of ``step``, or lateness is negative.

    Example:
        >>> spec = SlidingWindowSpec(size=timedelta(minutes=10), step=timedelta(minutes=5))
        >>> spec.windows_for(420_000)  # 00:07: [00:00, 00:10) and [00:05, 00:15)
        [(0, 600000), (300000, 900000)]
        >>> SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=4))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: window size 0:10:00 must be a whole multiple of the step 0:04:00, ...

    """

    size: timedelta
    step: timedelta
    allowed_lateness: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        for name in ("size", "step", "allowed_lateness"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value % _MS:
                raise ValueError(
                    f"window {name} must be a timedelta of whole milliseconds such as "
                    f"timedelta(minutes=5), got {value!r}"
                )
        if self.size <= timedelta(0) or self.step <= timedelta(0):
            raise ValueError(
                f"window size and step must be longer than zero, got {self.size} and {self.step}"
            )
        if self.size % self.step:
            raise ValueError(
                f"window size {self.size} must be a whole multiple of the step {self.step}, "
                "so that every event falls in the same number of windows; e.g. size 10m, step 5m"
            )
        if self.allowed_lateness < timedelta(0):
            raise ValueError(f"allowed_lateness must not be negative, got {self.allowed_lateness}")

    def windows_for(self, t_ms: int) -> list[tuple[int, int]]:
        """The windows ``(start, end)`` (epoch ms, end exclusive) holding an event at ``t_ms``.

        Oldest first; ``size / step`` of them.
        """
        size, step = self.size // _MS, self.step // _MS
        last = t_ms - t_ms % step
        return [(start, start + size) for start in range(last - size + step, last + step, step)]


@dataclass(frozen=True)
class WindowValues:
    """The aggregate values of one window, keyed by :attr:`AggregateSpec.name`.

    Example:
        >>> WindowValues(0, 600_000, {"count": 2}).values["count"]
        2
    """

    start_ms: int
    end_ms: int
    values: dict[str, Any]


@dataclass(frozen=True)
class ClosedWindow(WindowValues):
    """A window the watermark has passed, with its final values.

    ``update`` is True when it fired before and an event within the allowed lateness changed it.

    Example:
        >>> ClosedWindow(0, 600_000, {"count": 3}, update=True).update
        True
    """

    update: bool = False


@dataclass(frozen=True)
class AddResult:
    """What adding one event did.

    Attributes:
        late: True when every window of the event was already dropped: nothing was applied.
        updated: The windows the event went into, oldest first, with their values now.

    Example:
        >>> AddResult(late=True).updated
        ()
    """

    late: bool
    updated: tuple[WindowValues, ...] = ()


@dataclass
class WindowState:
    """The open windows of one user (saved in Flink state between events).

    Attributes:
        windows: Window start (epoch ms) to the accumulator of each aggregate, by name.
        fired: Starts of windows that fired at least once.
        changed: Starts of windows changed since they last fired (or never fired).

    Example:
        >>> logic = SlidingWindowLogic(
        ...     SlidingWindowSpec(timedelta(minutes=10), timedelta(minutes=5)),
        ...     [AggregateSpec.parse("count")])
        >>> state = WindowState()
        >>> _ = logic.add(state, {}, 60_000, watermark_ms=0)
        >>> data = state.snapshot()
        >>> data["windows"], data["aggregates"]
        ([[-300000, {'count': 1}], [0, {'count': 1}]], {'count': 'count'})
        >>> WindowState.restore(data, logic.aggregates).snapshot() == data
        True

    """

    windows: dict[int, dict[str, Accumulator]] = field(default_factory=dict)
    fired: set[int] = field(default_factory=set)
    changed: set[int] = field(default_factory=set)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data for Flink state; :meth:`restore` reads it back."""
        windows = [
            [start, {name: acc.snapshot() for name, acc in accumulators.items()}]
            for start, accumulators in sorted(self.windows.items())
        ]
        aggregates = {
            name: str(acc.spec)
            for accumulators in self.windows.values()
            for name, acc in accumulators.items()
        }
        return {
            "v": _SNAPSHOT_VERSION,
            "aggregates": aggregates,
            "windows": windows,
            "fired": sorted(self.fired),
            "changed": sorted(self.changed),
        }

    @classmethod
    def restore(
        cls,
        data: Mapping[str, Any] | None,
        aggregates: Mapping[str, AggregateSpec] | Sequence[AggregateSpec],
    ) -> WindowState:
        """The state saved by :meth:`snapshot` (a fresh one for None).

        Args:
            data: What :meth:`snapshot` returned.
            aggregates: The job's aggregates by result key (a sequence: keyed by
                :attr:`AggregateSpec.name`); each must be in the snapshot.

        Raises:
            ValueError: When ``data`` is of another version or lacks one of ``aggregates``
                (the job's definition changed: start it from fresh state).

        """
        if not data:
            return cls()
        if data.get("v") != _SNAPSHOT_VERSION:
            raise ValueError(f"unknown window state version {data.get('v')!r}")
        named, saved_specs = named_aggregates(aggregates), data.get("aggregates", {})
        if data["windows"]:
            missing = [
                f"{spec}' as '{name}"
                for name, spec in named.items()
                if saved_specs.get(name) != str(spec)
            ]
            if missing:
                raise ValueError(
                    f"window state has no aggregate '{missing[0]}' (it has "
                    f"{', '.join(f'{v} as {k}' for k, v in sorted(saved_specs.items()))}); the "
                    "job's aggregates changed, start it from fresh state"
                )
        state = cls(fired=set(data["fired"]), changed=set(data["changed"]))
        for start, saved in data["windows"]:
            state.windows[int(start)] = {
                name: Accumulator.restore(spec, saved[name]) for name, spec in named.items()
            }
        return state


class SlidingWindowLogic:
    """Applies events and the watermark to one user's :class:`WindowState` (pure, no runtime).

    Args:
        spec: The windows.
        aggregates: What each window computes, by result key; a sequence is keyed by each
            aggregate's :attr:`AggregateSpec.name`, which must then be unique.

    Raises:
        ValueError: When there is no aggregate or two share a result key.

    Example:
        >>> spec = SlidingWindowSpec(size=timedelta(minutes=10), step=timedelta(minutes=5))
        >>> logic = SlidingWindowLogic(spec, [AggregateSpec.parse("count")])
        >>> state = WindowState()
        >>> [(w.start_ms, w.values) for w in logic.add(state, {}, 420_000, 0).updated]
        [(0, {'count': 1}), (300000, {'count': 1})]
        >>> logic.deadline(state)
        600000
        >>> logic.current(state, 480_000)
        {'count': 1}
        >>> [(w.start_ms, w.end_ms, w.update) for w in logic.fire(state, 600_000)]
        [(0, 600000, False)]

    """

    def __init__(
        self,
        spec: SlidingWindowSpec,
        aggregates: Mapping[str, AggregateSpec] | Sequence[AggregateSpec],
    ) -> None:
        self.spec = spec
        self.aggregates = named_aggregates(aggregates)
        if not self.aggregates:
            raise ValueError("a sliding window needs at least one aggregate, e.g. count")
        self._size = spec.size // _MS
        self._step = spec.step // _MS
        self._lateness = spec.allowed_lateness // _MS

    def add(
        self, state: WindowState, row: Mapping[str, Any], at_ms: int, watermark_ms: int
    ) -> AddResult:
        """Add one event at ``at_ms`` to its windows that are not dropped yet.

        Raises:
            usp_feast.aggregates.AggregateError: When an aggregate meets bad data in ``row``;
                the state is then unchanged.

        """
        live = [w for w in self.spec.windows_for(at_ms) if w[1] + self._lateness > watermark_ms]
        if not live:
            return AddResult(late=True)
        # Check the row once against fresh accumulators so bad data changes no window.
        for aggregate in self.aggregates.values():
            aggregate.accumulator().add(row)
        updated = []
        for start, end in live:
            accumulators = state.windows.get(start)
            if accumulators is None:
                accumulators = state.windows[start] = self._fresh()
            for accumulator in accumulators.values():
                accumulator.add(row)
            state.changed.add(start)
            updated.append(WindowValues(start, end, _values(accumulators)))
        return AddResult(late=False, updated=tuple(updated))

    def fire(self, state: WindowState, watermark_ms: int) -> list[ClosedWindow]:
        """Fire the closed windows that changed since they last fired; drop expired ones.

        Returns:
            The windows fired, oldest first.

        """
        closed = []
        for start in sorted(state.windows):
            end = start + self._size
            if end > watermark_ms:
                break
            if start in state.changed:
                closed.append(
                    ClosedWindow(
                        start, end, _values(state.windows[start]), update=start in state.fired
                    )
                )
                state.fired.add(start)
                state.changed.discard(start)
            if end + self._lateness <= watermark_ms:
                del state.windows[start]
                state.fired.discard(start)
        return closed

    def current(self, state: WindowState, now_ms: int) -> dict[str, Any] | None:
        """The values to serve at ``now_ms``: the window ending at the next step boundary.

        That window is ``[b - size, b)`` with ``b`` the first step boundary after ``now_ms``;
        ``None`` when it holds no event (or was dropped).
        """
        boundary = now_ms - now_ms % self._step + self._step
        accumulators = state.windows.get(boundary - self._size)
        return None if accumulators is None else _values(accumulators)

    def serving(self, state: WindowState, after_ms: int) -> list[WindowValues]:
        """The windows ending after ``after_ms``, oldest first.

        Every one a reader may be served from ``after_ms`` on (see :meth:`current`), until an
        event changes them.
        """
        size = self._size
        return [
            WindowValues(start, start + size, _values(accumulators))
            for start, accumulators in sorted(state.windows.items())
            if start + size > after_ms
        ]

    def deadline(self, state: WindowState) -> int | None:
        """The watermark at which :meth:`fire` next has work (the job's timer), if any."""
        due = [
            start + self._size + (0 if start in state.changed else self._lateness)
            for start in state.windows
        ]
        return min(due, default=None)

    def _fresh(self) -> dict[str, Accumulator]:
        return {name: aggregate.accumulator() for name, aggregate in self.aggregates.items()}


def named_aggregates(
    aggregates: Mapping[str, AggregateSpec] | Sequence[AggregateSpec],
) -> dict[str, AggregateSpec]:
    """Aggregates by result key; a sequence is keyed by :attr:`AggregateSpec.name`.

    Raises:
        ValueError: When two aggregates of a sequence share a result key.

    Example:
        >>> named_aggregates([AggregateSpec.parse("count")])
        {'count': AggregateSpec(kind='count', field=None, k=None)}

    """
    if isinstance(aggregates, Mapping):
        return dict(aggregates)
    names: dict[str, AggregateSpec] = {}
    for aggregate in aggregates:
        if names.setdefault(aggregate.name, aggregate) != aggregate:
            raise ValueError(
                f"aggregates {str(names[aggregate.name])!r} and {str(aggregate)!r} share "
                f"the result key {aggregate.name!r}; name them apart"
            )
    return names


def _values(accumulators: Mapping[str, Accumulator]) -> dict[str, Any]:
    return {name: accumulator.result() for name, accumulator in accumulators.items()}
