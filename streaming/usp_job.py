r"""Deployable entry point of the generated jobs (signals and segments).

Local mini-cluster (what ``usp run`` does)::

    python streaming/usp_job.py --repo feature_repo streaming/search.json [more configs]

Flink cluster (the same file, unchanged)::

    flink run -py streaming/usp_job.py -pyexec /path/to/venv/bin/python \
        --repo feature_repo streaming/search.json streaming/segment_active_trip_planner.json

(the job sets ``pipeline.jars`` to the Kafka connector jars itself, see ``usp_feast.flink``).

Kafka comes from ``USP_KAFKA_BOOTSTRAP`` (default: the local stack), Redis from the repository's
``feature_store.yaml``. Several configs run as one Flink job so a laptop can hold them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def main() -> None:
    """Parse arguments, build the job and run it until cancelled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path, help="generated job config files")
    parser.add_argument("--repo", type=Path, default=Path("feature_repo"))
    parser.add_argument(
        "--checkpoints",
        default=None,
        help="checkpoint folder, or a URI on shared storage (s3://bucket/path); default "
        "<state dir>/checkpoints/<job>",
    )
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("USP_METRICS_PORT", "0")),
        help="port of the job's Prometheus endpoint (default $USP_METRICS_PORT, else a free one)",
    )
    parser.add_argument(
        "--flink-metrics-port",
        type=int,
        default=int(os.environ.get("USP_FLINK_METRICS_PORT", "0")),
        help="port of Flink's own Prometheus reporter (default $USP_FLINK_METRICS_PORT, else "
        "a free one)",
    )
    parser.add_argument(
        "--jobmanager",
        default=os.environ.get("USP_FLINK_JOBMANAGER") or None,
        help="host:port of a Flink cluster's REST endpoint to run on (default "
        "$USP_FLINK_JOBMANAGER, else a local mini-cluster in this process)",
    )
    args = parser.parse_args()
    repo = args.repo.resolve()
    # Thread mode runs Python inside the JVM, which PyFlink starts on first use: this
    # interpreter's packages, usp_feast itself (an editable install is found through a .pth
    # file, which PYTHONPATH entries do not read) and the repository (transform classes)
    # must be on its path first.
    from usp_feast import cluster

    interpreter_path = cluster.python_path(repo)
    os.environ["PYTHONPATH"] = os.pathsep.join(interpreter_path)

    from usp_feast import devstack, job_metrics, job_status
    from usp_feast.flink import JobRuntime, build_job, prometheus_reporter_jar
    from usp_feast.jobs import load_job_config
    from usp_feast.metric_names import job_name, job_part

    configs = [load_job_config(path) for path in args.configs]
    name = job_name(job_part(c.kind, c.definition) for c in configs)
    shared = args.checkpoints if args.checkpoints and "://" in args.checkpoints else None
    # With shared checkpoints the local folder only holds what a job keeps beside them.
    own = None if shared else args.checkpoints
    checkpoints = Path(own) if own else devstack.state_dir() / "checkpoints" / name
    checkpoints.mkdir(parents=True, exist_ok=True)
    flink_port = args.flink_metrics_port or devstack.free_port()
    runtime = JobRuntime(
        repo=repo,
        bootstrap_servers=devstack.endpoints().kafka,
        checkpoint_dir=checkpoints,
        checkpoint_uri=shared,
        parallelism=args.parallelism,
        flink_metrics_port=flink_port,
        jobmanager=args.jobmanager,
        python_path=interpreter_path,
        job_name=name,
    )
    # The local mini-cluster loads no plugins/ folder: Flink's Prometheus reporter has to be
    # on the JVM's class path, and PyFlink's gateway appends $HADOOP_CLASSPATH to it.
    os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(
        p for p in (os.environ.get("HADOOP_CLASSPATH"), str(prometheus_reporter_jar())) if p
    )
    logging.basicConfig(level=logging.WARNING)
    # The job's Python steps run in the JVM PyFlink starts next, which inherits this
    # environment: they serve their metrics on this port (usp_feast.job_metrics).
    port = args.metrics_port or devstack.free_port()
    os.environ[job_metrics.ENV] = json.dumps({"port": port})
    if args.jobmanager is None:
        metrics_urls = (f"http://127.0.0.1:{port}/metrics",)
        flink_metrics_urls = (f"http://127.0.0.1:{flink_port}/metrics",)
    else:  # the cluster's TaskManagers run the Python steps, its processes Flink's reporters
        metrics_urls = cluster.job_metrics_urls(args.jobmanager)
        flink_metrics_urls = cluster.flink_metrics_urls(args.jobmanager)
    record = job_status.JobRecord(
        job=name,
        pid=os.getpid(),
        metrics_urls=metrics_urls,
        flink_metrics_urls=flink_metrics_urls,
        started_at=job_status.started_now(),
        pipelines=job_status.pipelines_of(configs),
        checkpoint_dir=str(checkpoints.resolve()),
    )
    job_status.register_job(record)
    # `usp run` stops a job with SIGTERM: exit through Python so the record is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.jobmanager is None:
            build_job(configs, runtime).execute(f"usp: {name}")
        else:
            _run_on_cluster(build_job(configs, runtime), name, args.jobmanager)
    finally:
        job_status.unregister_job(name, record.pid)


def _run_on_cluster(env: Any, name: str, rest: str) -> None:
    """Submit to the cluster and stay until the job ends; stopping this process cancels it.

    The cluster restarts failed tasks on its own (its restart strategy, spare TaskManagers):
    this process only mirrors the job's life, as ``usp run`` does for a local job. After the
    submission it speaks REST only: the signal that stops it may stop PyFlink's JVM too.
    Whatever ends this process (Ctrl-C, SIGTERM, a JobManager gone for good) cancels the job,
    so none is left running unwatched.
    """
    from usp_feast import cluster

    job_id = str(env.execute_async(f"usp: {name}").get_job_id())
    print(f"submitted job {job_id} ({name}) to {rest}", flush=True)
    try:
        state = _final_state(rest, job_id)
    except BaseException:
        with contextlib.suppress(OSError):
            cluster.cancel_job(rest, job_id)
        raise
    if state != "FINISHED":
        raise SystemExit(f"job {job_id} ended {state}; see http://{rest}/#/job/completed")


def _final_state(rest: str, job_id: str, patience_s: float = 120.0) -> str:
    """Poll the job until it ends; a JobManager too busy to answer is given ``patience_s``."""
    from usp_feast import cluster

    silent_since: float | None = None
    while True:
        try:
            state = cluster.job_state(rest, job_id)
        except OSError as exc:  # refused, or timed out while the cluster is loaded
            now = time.monotonic()
            silent_since = silent_since or now
            if now - silent_since > patience_s:
                raise SystemExit(
                    f"the JobManager at {rest} has not answered for {patience_s:.0f} s ({exc}); "
                    f"cancelling job {job_id}"
                ) from None
        else:
            silent_since = None
            if state in cluster.FINAL_STATES:
                return state
        time.sleep(1)


if __name__ == "__main__":
    main()
