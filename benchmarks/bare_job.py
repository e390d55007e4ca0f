"""Baseline for bench_streaming: a bare PyFlink job, Kafka → Python map → discard.

Same source (raw bytes + metadata via the Kafka table connector) and the same thread mode and
buffer timeout as the signal jobs, and a per-record Python map that only counts; it reports
progress to a Redis key so the benchmark can time it without a sink.

    python benchmarks/bare_job.py TOPIC GROUP REDIS_URL PROGRESS_KEY
"""

from __future__ import annotations

import os
import site
import sys


def main() -> None:
    topic, group, redis_url, key = sys.argv[1:5]
    os.environ["PYTHONPATH"] = os.pathsep.join(site.getsitepackages())
    from pyflink.common import Configuration, Types
    from pyflink.datastream import MapFunction, StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    from usp_feast import devstack
    from usp_feast.flink import jar_paths

    class Count(MapFunction):
        def open(self, runtime_context):
            import time

            import redis

            self.time = time
            self.redis = redis.Redis.from_url(redis_url)
            self.count = 0

        def map(self, value):
            self.count += 1
            if self.count % 2000 == 0:
                self.redis.set(key, f"{self.count} {self.time.time()}")
            return self.count

    conf = Configuration()
    conf.set_string("python.execution-mode", "thread")
    conf.set_string("python.executable", sys.executable)
    conf.set_string("execution.buffer-timeout.interval", "5 ms")
    conf.set_string("pipeline.jars", ";".join(p.as_uri() for p in jar_paths()))
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(
        f"""CREATE TEMPORARY TABLE raw_in (
          `value` BYTES,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `broker_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
        ) WITH (
          'connector' = 'kafka', 'topic' = '{topic}',
          'properties.bootstrap.servers' = '{devstack.endpoints().kafka}',
          'properties.group.id' = '{group}', 'properties.auto.offset.reset' = 'earliest',
          'scan.startup.mode' = 'group-offsets', 'format' = 'raw'
        )"""
    )
    raw = t_env.to_data_stream(t_env.from_path("raw_in"))
    raw.map(Count(), output_type=Types.LONG()).filter(lambda _: False).print()
    env.execute("bare baseline")


if __name__ == "__main__":
    main()
