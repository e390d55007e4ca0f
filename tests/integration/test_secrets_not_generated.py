"""Secrets in the environment never reach a generated file (usp_feast.connections)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import copy_repo
from usp_feast.connections import SECRET_VARIABLES

pytestmark = pytest.mark.integration

# Every connection variable, set to a value no generator could produce by chance.
MARK = f"zz{uuid.uuid4().hex[:8]}"
ENVIRONMENT = {
    "USP_REDIS_USERNAME": f"user-{MARK}",
    "USP_REDIS_PASSWORD": f"redis-pw-{MARK}",
    "USP_REDIS_URL": f"rediss://user-{MARK}:url-pw-{MARK}@redis.example:6380",
    "USP_KAFKA_BOOTSTRAP": f"kafka-{MARK}.example:9093",
    "USP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "USP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "USP_KAFKA_SASL_USERNAME": f"kafka-user-{MARK}",
    "USP_KAFKA_SASL_PASSWORD": f"kafka-pw-{MARK}",
    "USP_KAFKA_SSL_KEY_PASSWORD": f"key-pw-{MARK}",
}


def test_every_secret_variable_is_set_here() -> None:
    assert set(SECRET_VARIABLES) <= set(ENVIRONMENT)


def test_usp_generate_writes_no_secret_of_the_environment(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path, "redis://${USP_REDIS_ADDRESS}", f"secrets_{uuid.uuid4().hex[:8]}")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    result = subprocess.run(
        [sys.executable, "-m", "usp_feast.cli", "generate", "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **ENVIRONMENT},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Every file the generator wrote or changed, wherever it put it.
    generated = [
        path
        for path in tmp_path.rglob("*")
        if path.is_file() and before.get(path) != path.read_bytes()
    ]
    assert {"streaming", "backfill", "monitoring"} <= {
        p.relative_to(tmp_path).parts[0] for p in generated
    }
    # The scan reads what was written: the job configs name the project's definitions.
    assert any(b"search" in path.read_bytes() for path in generated)
    leaks = [
        f"{path.relative_to(tmp_path)} holds {name}"
        for path in [*generated, *repo.rglob("*.yaml")]
        for name, value in ENVIRONMENT.items()
        if name != "USP_KAFKA_SECURITY_PROTOCOL" and name != "USP_KAFKA_SASL_MECHANISM"
        for needle in {value, value.split("://")[-1]} | {MARK}
        if needle.encode() in path.read_bytes()
    ]
    assert leaks == []
    # The output says what it wrote, and nothing of the environment either.
    assert MARK not in result.stdout + result.stderr
