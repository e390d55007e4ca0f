"""Job configs generated from definitions (pure: no Flink, no Kafka).

Streaming: one JSON file per signal (``<signal>.json``), per join signal (``join_<name>.json``),
per segment (``segment_<name>.json``) and per session engagement (``session_<name>.json``), next
to the job entry point in ``streaming/``. Backfill: one per signal (``<signal>.json``) next to
the backfill entry point in ``backfill/``.
The files carry what the job does, never where services live or secrets: Kafka bootstrap
servers come from ``USP_KAFKA_BOOTSTRAP`` (or the local stack) and Redis from the repository's
``feature_store.yaml`` when the job starts. Output is deterministic, so a diff of
``streaming/`` shows what a definition change does to the jobs.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from usp_feast.definitions import Definitions, JobDefinition
from usp_feast.spec import JoinSignalSpec, SegmentSpec, SessionEngagementSpec, SignalSpec

__all__ = [
    "AnyJobConfig",
    "BackfillConfig",
    "JobConfig",
    "JobSettings",
    "JoinJobConfig",
    "KeyedJobConfig",
    "SegmentJobConfig",
    "SessionJobConfig",
    "SignalInput",
    "SignalJobConfig",
    "backfill_config",
    "config_file",
    "job_config",
    "join_job_config",
    "load_backfill_config",
    "load_job_config",
    "parse_job_config",
    "render_backfill_configs",
    "render_job_configs",
    "segment_job_config",
    "session_job_config",
]


class JobSettings(BaseModel):
    """What every job config carries: its consumer group and how it batches and checkpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consumer_group: str
    watermark_out_of_orderness_ms: int = 5_000
    """How far out of event-time order input may arrive and still be applied."""
    checkpoint_interval_ms: int = 2_000
    batch_max_delay_ms: int = 10
    """How long a record may wait to be handed to Python (and the store) with others."""
    batch_max_rows: int = 500
    buffer_timeout_ms: int = 5


class SignalJobConfig(JobSettings):
    """Everything a signal job needs to run, independent of the deployment."""

    kind: Literal["signal"] = "signal"
    signal: str
    source_topic: str
    signal_topic: str
    dead_letter_topic: str
    suite: str
    """Expectation suite file, relative to the repository's validation folder."""
    max_event_bytes: int = 64 * 1024

    @property
    def definition(self) -> str:
        """The definition's name (the ``pipeline`` label of the job's metrics)."""
        return self.signal

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The Kafka topics the pipeline reads."""
        return (self.source_topic,)


class JoinJobConfig(JobSettings):
    """Everything a join signal job needs to run, independent of the deployment.

    How it joins (sides, fields, rules) is read from the definition itself.
    """

    kind: Literal["join"] = "join"
    join: str
    left_topic: str
    right_topic: str
    left_suite: str
    right_suite: str
    """Expectation suite files, relative to the repository's validation folder."""
    signal_topic: str
    dead_letter_topic: str
    late_topic: str
    max_event_bytes: int = 64 * 1024
    idle_advance_ms: int = 2_000
    """With no input for this long, event time runs on with the clock (waiting joins answer)."""
    state_backend: Literal["rocksdb", "hashmap"] = "rocksdb"
    """Where keyed state lives: RocksDB spills to disk, so join state may outgrow memory."""

    @property
    def name(self) -> str:
        """The job's part name (used in operator names and uids)."""
        return f"join_{self.join}"

    @property
    def definition(self) -> str:
        """The definition's name (the ``pipeline`` label of the job's metrics)."""
        return self.join

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The Kafka topics the pipeline reads."""
        return (self.left_topic, self.right_topic)


class SignalInput(BaseModel):
    """A signal a segment or session job listens to, and where it is published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: str
    topic: str


class KeyedJobConfig(JobSettings):
    """What every per-user job over signal topics (segments, sessions) needs to run."""

    inputs: tuple[SignalInput, ...]
    late_topic: str
    idle_advance_ms: int = 2_000
    """With no input for this long, event time runs on with the clock (timers fire)."""

    @property
    def name(self) -> str:
        """The job's part name (used in operator names and uids)."""
        raise NotImplementedError

    @property
    def definition(self) -> str:
        """The definition's name (the ``pipeline`` label of the job's metrics)."""
        raise NotImplementedError

    @property
    def input_topics(self) -> tuple[str, ...]:
        """The Kafka topics the pipeline reads."""
        return tuple(i.topic for i in self.inputs)


class SegmentJobConfig(KeyedJobConfig):
    """Everything a segment job needs to run, independent of the deployment."""

    kind: Literal["segment"] = "segment"
    segment: str
    segment_topic: str

    @property
    def name(self) -> str:
        """The job's part name (used in operator names and uids)."""
        return f"segment_{self.segment}"

    @property
    def definition(self) -> str:
        """The definition's name (the ``pipeline`` label of the job's metrics)."""
        return self.segment


class SessionJobConfig(KeyedJobConfig):
    """Everything a session engagement job needs to run, independent of the deployment.

    What it computes (session or window, features) is read from the definition itself.
    """

    kind: Literal["session"] = "session"
    session: str
    session_topic: str

    @property
    def name(self) -> str:
        """The job's part name (used in operator names and uids)."""
        return f"session_{self.session}"

    @property
    def definition(self) -> str:
        """The definition's name (the ``pipeline`` label of the job's metrics)."""
        return self.session


AnyJobConfig = SignalJobConfig | JoinJobConfig | SegmentJobConfig | SessionJobConfig
JobConfig = Annotated[AnyJobConfig, Field(discriminator="kind")]
_JOB_CONFIG: TypeAdapter[AnyJobConfig] = TypeAdapter(JobConfig)


def config_file(spec: JobDefinition) -> str:
    """File name of a definition's job config in ``streaming/``."""
    if isinstance(spec, SignalSpec):
        return f"{spec.name}.json"
    if isinstance(spec, JoinSignalSpec):
        return f"join_{spec.name}.json"
    if isinstance(spec, SegmentSpec):
        return f"{spec.view}.json"
    return f"session_{spec.name}.json"


def job_config(spec: SignalSpec) -> SignalJobConfig:
    """The job config of one signal, with the platform's defaults."""
    return SignalJobConfig(
        signal=spec.name,
        source_topic=spec.source.topic,
        signal_topic=spec.signal_topic,
        dead_letter_topic=spec.dead_letter_topic,
        consumer_group=f"usp.signal.{spec.name}",
        suite=f"{spec.validation}.json",
    )


def join_job_config(spec: JoinSignalSpec) -> JoinJobConfig:
    """The job config of one join signal: its two raw topics and its outputs."""
    return JoinJobConfig(
        join=spec.name,
        left_topic=spec.left.topic,
        right_topic=spec.right.topic,
        left_suite=f"{spec.left.validation}.json",
        right_suite=f"{spec.right.validation}.json",
        signal_topic=spec.signal_topic,
        dead_letter_topic=spec.dead_letter_topic,
        late_topic=spec.late_topic,
        consumer_group=f"usp.join.{spec.name}",
        watermark_out_of_orderness_ms=spec.out_of_orderness // timedelta(milliseconds=1),
    )


def segment_job_config(spec: SegmentSpec, definitions: Definitions) -> SegmentJobConfig:
    """The job config of one segment: its input signals' topics and its output topics."""
    return SegmentJobConfig(
        segment=spec.name,
        inputs=tuple(
            SignalInput(signal=name, topic=definitions.signal(name).signal_topic)
            for name in spec.rules().signals
        ),
        segment_topic=spec.topic,
        late_topic=spec.late_topic,
        consumer_group=f"usp.segment.{spec.name}",
    )


def session_job_config(spec: SessionEngagementSpec, definitions: Definitions) -> SessionJobConfig:
    """The job config of one session engagement: its input signals' topics and its outputs."""
    return SessionJobConfig(
        session=spec.name,
        inputs=tuple(
            SignalInput(signal=name, topic=definitions.signal(name).signal_topic)
            for name in spec.signals
        ),
        session_topic=spec.topic,
        late_topic=spec.late_topic,
        consumer_group=f"usp.session.{spec.name}",
    )


def render_job_configs(definitions: Definitions) -> dict[str, str]:
    """File name → JSON text of every job config (deterministic bytes)."""
    configs: dict[str, BaseModel] = {}
    for spec in sorted(definitions.signals, key=lambda s: s.name):
        configs[config_file(spec)] = (
            join_job_config(spec) if isinstance(spec, JoinSignalSpec) else job_config(spec)
        )
    for segment in sorted(definitions.segments, key=lambda s: s.name):
        configs[config_file(segment)] = segment_job_config(segment, definitions)
    for session in sorted(definitions.sessions, key=lambda s: s.name):
        configs[config_file(session)] = session_job_config(session, definitions)
    return {name: _json(config) for name, config in configs.items()}


class BackfillConfig(BaseModel):
    """How a signal is backfilled from raw history (``backfill/<signal>.json``).

    Paths are relative to the feature repository, like its Feast file sources.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["backfill"] = "backfill"
    signal: str
    suite: str
    """Expectation suite file, relative to the repository's validation folder."""
    source: str
    """Default raw history (folder, file or glob); ``usp backfill --source`` overrides it."""
    work_dir: str
    """Where a run keeps its progress (to resume), rejected events and validation reports."""
    batch_rows: int = 50_000
    max_event_bytes: int = 64 * 1024


def backfill_config(spec: SignalSpec) -> BackfillConfig:
    """The backfill config of one signal, with the platform's defaults."""
    return BackfillConfig(
        signal=spec.name,
        suite=f"{spec.validation}.json",
        source=f"data/raw/{spec.source.topic}",
        work_dir=f"data/backfill/{spec.name}",
    )


def render_backfill_configs(definitions: Definitions) -> dict[str, str]:
    """File name → JSON text of every signal's backfill config (deterministic bytes).

    Join signals have none: their output depends on the order two streams meet in, which a
    replay of both topics through the join job reproduces.
    """
    return {
        f"{spec.name}.json": _json(backfill_config(spec))
        for spec in sorted(definitions.signals, key=lambda s: s.name)
        if isinstance(spec, SignalSpec)
    }


def load_backfill_config(path: Path) -> BackfillConfig:
    """Read a generated backfill config."""
    return BackfillConfig.model_validate_json(path.read_text())


def _json(config: BaseModel) -> str:
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def load_job_config(path: Path) -> AnyJobConfig:
    """Read a generated job config (any kind)."""
    return parse_job_config(path.read_text())


def parse_job_config(text: str) -> AnyJobConfig:
    """A job config from its JSON text (any kind)."""
    return _JOB_CONFIG.validate_json(text)
