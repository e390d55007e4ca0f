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
import importlib.util
import logging
import os
import site
from pathlib import Path


def main() -> None:
    """Parse arguments, build the job and run it until cancelled."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path, help="generated job config files")
    parser.add_argument("--repo", type=Path, default=Path("feature_repo"))
    parser.add_argument("--checkpoints", type=Path, default=None)
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args()
    repo = args.repo.resolve()
    # Thread mode runs Python inside the JVM, which PyFlink starts on first use: this
    # interpreter's packages, usp_feast itself (an editable install is found through a .pth
    # file, which PYTHONPATH entries do not read) and the repository (transform classes)
    # must be on its path first.
    package_root = Path(importlib.util.find_spec("usp_feast").origin).parents[1]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [*site.getsitepackages(), str(package_root), str(repo)]
    )

    from usp_feast import devstack
    from usp_feast.flink import JobRuntime, build_job
    from usp_feast.jobs import load_job_config

    configs = [load_job_config(path) for path in args.configs]
    name = "+".join(c.signal if c.kind == "signal" else c.name for c in configs)
    checkpoints = args.checkpoints or devstack.state_dir() / "checkpoints" / name
    checkpoints.mkdir(parents=True, exist_ok=True)
    runtime = JobRuntime(
        repo=repo,
        bootstrap_servers=devstack.endpoints().kafka,
        checkpoint_dir=checkpoints,
        parallelism=args.parallelism,
    )
    logging.basicConfig(level=logging.WARNING)
    build_job(configs, runtime).execute(f"usp: {name}")


if __name__ == "__main__":
    main()
