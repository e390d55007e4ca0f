"""The project's Java operators (java/, built by setup) on a real PyFlink mini-cluster.

Each case runs as its own Python process (one PyFlink JVM each, like a job), prints what the
Python side received as JSON, and the test checks it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from usp_feast.runner import job_environment

pytestmark = pytest.mark.integration

PRELUDE = """
import json, os, site, sys
os.environ["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
from pyflink.common import Configuration, Row, Types
from pyflink.common.time import Instant
from pyflink.datastream import ProcessFunction, StreamExecutionEnvironment
from usp_feast.flink import RECORD_BATCH, RESULT_BATCH, jar_paths, micro_batches, unbatch

conf = Configuration()
conf.set_string("python.execution-mode", "thread")
conf.set_string("python.executable", sys.executable)
env = StreamExecutionEnvironment.get_execution_environment(conf)
env.add_jars(*(p.as_uri() for p in jar_paths()))
env.set_parallelism(1)
"""


def run_flink(tmp_path: Path, body: str) -> object:
    script = tmp_path / "case.py"
    script.write_text(PRELUDE + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(script)],
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_micro_batcher_cuts_by_size_keeps_order_and_flags_the_end_of_input(tmp_path: Path) -> None:
    batches = run_flink(
        tmp_path,
        """
        kafka_row = Types.ROW(
            [Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.LONG(), Types.INSTANT()]
        )
        rows = [Row(b"v%d" % i, i % 3, i, Instant(1_790_000_000 + i, 0)) for i in range(1234)]
        source = env.from_collection(rows, type_info=kafka_row)
        summary = micro_batches(source, 500, 60_000, "batch").map(
            lambda b: json.dumps(
                [[bytes(v).decode() for v in b[0]], list(b[1]), list(b[2]), list(b[3]), b[4]]
            ),
            output_type=Types.STRING(),
        )
        with summary.execute_and_collect() as results:
            print(json.dumps([json.loads(r) for r in results]))
        """,
    )
    assert [len(b[0]) for b in batches] == [500, 500, 234]
    assert [b[4] for b in batches] == [False, False, True]  # a barrier or the end follows
    values = [v for b in batches for v in b[0]]
    assert values == [f"v{i}" for i in range(1234)]
    assert [o for b in batches for o in b[2]] == list(range(1234))
    assert [p for b in batches for p in b[1]] == [i % 3 for i in range(1234)]
    assert batches[0][3][:2] == [1_790_000_000_000, 1_790_000_001_000]


def test_unbatcher_emits_each_value_with_its_event_time_or_none(tmp_path: Path) -> None:
    emitted = run_flink(
        tmp_path,
        """
        T = 1_790_000_000_000  # epoch ms (py4j hands small ints to Java as Integer, not Long)
        batches = [
            Row(["a", "b"], [T + 1, T + 2], ["dead-1"]),
            Row([], [], []),
            Row(["c"], [T + 3], ["dead-2", "dead-3"]),
        ]
        results = env.from_collection(batches, type_info=RESULT_BATCH)

        class WithTimestamp(ProcessFunction):
            def process_element(self, value, ctx):
                yield json.dumps([value, ctx.timestamp()])

        out = {}
        for name, field, stamp in (("signals", 0, 1), ("dead", 2, -1)):
            stream = unbatch(results, field, stamp, name).process(
                WithTimestamp(), output_type=Types.STRING()
            )
            with stream.execute_and_collect() as records:
                out[name] = [json.loads(r) for r in records]
        print(json.dumps(out))
        """,
    )
    t = 1_790_000_000_000
    assert emitted["signals"] == [["a", t + 1], ["b", t + 2], ["c", t + 3]]
    assert [value for value, _ in emitted["dead"]] == ["dead-1", "dead-2", "dead-3"]
    # No timestamp: PyFlink reports None or Long.MIN_VALUE depending on the mode.
    assert {stamp for _, stamp in emitted["dead"]} <= {None, -(2**63)}
