"""Streaming job configs generated from definitions (pure: no Flink, no Kafka).

One JSON file per signal, next to the job entry point in ``streaming/``. The files carry what
the job does, never where services live or secrets: Kafka bootstrap servers come from
``USP_KAFKA_BOOTSTRAP`` (or the local stack) and Redis from the repository's
``feature_store.yaml`` when the job starts. Output is deterministic, so a diff of
``streaming/`` shows what a definition change does to the jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from usp_feast.definitions import Definitions
from usp_feast.spec import SignalSpec

__all__ = ["SignalJobConfig", "job_config", "load_job_config", "render_job_configs"]


class SignalJobConfig(BaseModel):
    """Everything a signal job needs to run, independent of the deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    signal: str
    source_topic: str
    signal_topic: str
    dead_letter_topic: str
    consumer_group: str
    suite: str
    """Expectation suite file, relative to the repository's validation folder."""
    max_event_bytes: int = 64 * 1024
    watermark_out_of_orderness_ms: int = 5_000
    checkpoint_interval_ms: int = 2_000
    batch_max_delay_ms: int = 10
    """How long a record may wait to be handed to Python (and the store) with others."""
    batch_max_rows: int = 500
    buffer_timeout_ms: int = 5


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


def render_job_configs(definitions: Definitions) -> dict[str, str]:
    """File name → JSON text of every signal job (deterministic bytes)."""
    return {
        f"{spec.name}.json": json.dumps(job_config(spec).model_dump(), indent=2, sort_keys=True)
        + "\n"
        for spec in sorted(definitions.signals, key=lambda s: s.name)
    }


def load_job_config(path: Path) -> SignalJobConfig:
    """Read a generated job config."""
    return SignalJobConfig.model_validate_json(path.read_text())
