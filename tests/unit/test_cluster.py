"""The local cluster's pure parts: its shape, its Flink configuration, the submit command."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from usp_feast import cluster, devstack
from usp_feast.cluster import ClusterError, ClusterSpec, python_path, render_config
from usp_feast.runner import job_command

pytestmark = pytest.mark.unit


def test_jobs_fill_the_working_slots_and_leave_the_standby_free() -> None:
    spec = ClusterSpec(taskmanagers=3, standby=1, slots=2)

    assert (spec.parallelism, spec.processes) == (6, 4)


@pytest.mark.parametrize(("taskmanagers", "standby", "slots"), [(0, 1, 1), (2, -1, 1), (2, 1, 0)])
def test_a_shape_that_cannot_run_a_job_is_refused(
    taskmanagers: int, standby: int, slots: int
) -> None:
    with pytest.raises(ClusterError, match="at least one TaskManager"):
        ClusterSpec(taskmanagers=taskmanagers, standby=standby, slots=slots)


def test_the_config_is_deterministic_and_notices_a_lost_taskmanager_in_seconds() -> None:
    spec = ClusterSpec(taskmanagers=2, standby=1, slots=2, rest_port=18555)

    text = render_config(spec, 16123, "--add-opens=java.base/java.lang=ALL-UNNAMED")
    settings = yaml.safe_load(text)

    assert text == render_config(spec, 16123, "--add-opens=java.base/java.lang=ALL-UNNAMED")
    assert settings["rest.port"] == 18555
    assert settings["jobmanager.rpc.port"] == 16123
    assert settings["taskmanager.numberOfTaskSlots"] == 2
    assert settings["jobmanager.execution.failover-strategy"] == "region"
    # A dead TaskManager is noticed by its refused heartbeat RPCs, in about 2 s; a live but
    # busy one gets a timeout long enough for a loaded 2-core machine.
    rpc_detection = settings["heartbeat.interval"] * settings["heartbeat.rpc-failure-threshold"]
    assert rpc_detection <= 3_000
    assert settings["heartbeat.timeout"] >= 20_000
    assert settings["env.java.opts.all"].startswith("--add-opens")
    # Only loopback: the cluster runs jobs' Python, it must not listen on the network.
    assert {settings[k] for k in settings if k.endswith(("address", "bind-host", ".host"))} == {
        "127.0.0.1"
    }
    # A standalone resource manager cannot start TaskManagers: spares are started up front.
    assert "slotmanager.redundant-taskmanager-num" not in settings


def test_the_taskmanagers_python_path_holds_the_packages_usp_feast_and_the_repository(
    tmp_path: Path,
) -> None:
    path = python_path(tmp_path)

    assert path[-1] == str(tmp_path)
    assert str(Path(__file__).resolve().parents[2]) in path  # where usp_feast lives
    assert any(p.endswith("site-packages") for p in path)


def test_a_cluster_job_is_submitted_with_its_parallelism_to_the_jobmanager() -> None:
    command = job_command(
        [Path("s/search.json")], Path("repo"), parallelism=2, jobmanager="127.0.0.1:18081"
    )

    assert command[-3:] == ["--jobmanager", "127.0.0.1:18081", "s/search.json"]
    assert command[command.index("--parallelism") + 1] == "2"
    assert "--jobmanager" not in job_command([Path("s/search.json")], Path("repo"))


def test_a_cluster_jobs_metrics_are_served_where_cluster_json_says(tmp_path: Path) -> None:
    record = {
        "rest": "127.0.0.1:18555",
        "jobmanager": devstack.process_record(os.getpid()),  # alive: the record counts
        "job_metrics_ports": [4101, 4102],
        "flink_metrics_ports": {"jobmanager": 4200, "taskmanagers": [4201, 4202]},
    }
    (tmp_path / "cluster.json").write_text(json.dumps(record))

    assert cluster.job_metrics_urls("127.0.0.1:18555", tmp_path) == (
        "http://127.0.0.1:4101/metrics",
        "http://127.0.0.1:4102/metrics",
    )
    assert cluster.flink_metrics_urls("127.0.0.1:18555", tmp_path)[0].endswith(":4200/metrics")
    assert len(cluster.flink_metrics_urls("127.0.0.1:18555", tmp_path)) == 3
    # A cluster started elsewhere: nothing known of its TaskManagers here.
    assert cluster.job_metrics_urls("10.0.0.9:8081", tmp_path) == ()
    assert cluster.flink_metrics_urls("10.0.0.9:8081", tmp_path) == ()
