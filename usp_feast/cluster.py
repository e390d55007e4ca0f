"""A standalone Flink cluster on this machine: a JobManager and supervised TaskManagers.

``usp cluster up --taskmanagers 2 --standby 1`` starts, as local processes from the Flink
distribution inside the PyFlink wheel:

* a JobManager, REST on ``127.0.0.1:$USP_FLINK_REST_PORT`` (default 18081);
* a supervisor that keeps ``taskmanagers + standby`` TaskManagers (one slot each by default)
  running and starts a new one whenever one dies, as a Kubernetes Deployment restarts a pod.

Standby: ``usp run --cluster`` asks for ``taskmanagers * slots`` parallel slots, so the
``standby`` TaskManagers stay registered with free slots. When a TaskManager dies, the job
restarts on them at once instead of waiting for a replacement to start and register. Flink's own
option, ``slotmanager.redundant-taskmanager-num``, only acts where Flink starts TaskManagers
itself (native Kubernetes, YARN); a standalone resource manager cannot start any (FLINK-32883),
so here the spares are started up front and kept (``docs/cluster.md``).

Everything lives under ``<state dir>/cluster``: ``conf/`` (generated), ``log/``, ``cluster.json``
(what runs) and ``taskmanagers.json`` (the supervisor's current TaskManagers).

Each TaskManager place has a port for the jobs' own metrics (``USP_JOB_METRICS``), which its
replacements keep: see :func:`job_metrics_urls`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from usp_feast import devstack, job_metrics

__all__ = [
    "FINAL_STATES",
    "ClusterError",
    "ClusterSpec",
    "busy_taskmanagers",
    "cancel_job",
    "cluster_dir",
    "down",
    "info",
    "job_state",
    "python_path",
    "render_config",
    "rest_get",
    "status",
    "taskmanagers",
    "up",
    "warm_taskmanagers",
    "warm_up",
]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_REPORTER_PORT = "metrics.reporter.prom.port"
_POLL_S = 0.5


class ClusterError(RuntimeError):
    """The cluster cannot be started, reached or stopped; the message says what to do."""


@dataclass(frozen=True)
class ClusterSpec:
    """The shape of the local cluster."""

    taskmanagers: int = 2
    """TaskManagers whose slots jobs fill (``usp run --cluster`` uses all of them)."""
    standby: int = 1
    """Extra TaskManagers kept registered with free slots, for failover."""
    slots: int = 1
    """Task slots per TaskManager."""
    rest_port: int = 18081
    warm_up: bool = True
    """Have every TaskManager import the jobs' Python before it is needed (hot standby)."""
    jobmanager_memory: str = "1024m"
    taskmanager_memory: str = "1536m"

    def __post_init__(self) -> None:
        if self.taskmanagers < 1 or self.standby < 0 or self.slots < 1:
            raise ClusterError(
                f"a cluster needs at least one TaskManager and one slot each, and no negative "
                f"standby count (got taskmanagers={self.taskmanagers}, standby={self.standby}, "
                f"slots={self.slots})"
            )

    @property
    def parallelism(self) -> int:
        """What a job on this cluster runs with: every working slot, none of the standby's."""
        return self.taskmanagers * self.slots

    @property
    def processes(self) -> int:
        """TaskManagers the supervisor keeps running."""
        return self.taskmanagers + self.standby


def flink_home() -> Path:
    """The Flink distribution inside the PyFlink wheel (``bin/``, ``lib/``, ``plugins/``)."""
    import pyflink

    return Path(pyflink.__file__).parent


def cluster_dir() -> Path:
    """Where the local cluster keeps its configuration, logs and process records."""
    return devstack.state_dir() / "cluster"


def render_config(spec: ClusterSpec, rpc_port: int, java_options: str) -> str:
    """The cluster's ``config.yaml`` (pure: the same spec and ports give the same text)."""
    settings: dict[str, Any] = {
        "env.java.opts.all": java_options,
        "jobmanager.rpc.address": _HOST,
        "jobmanager.bind-host": _HOST,
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.memory.process.size": spec.jobmanager_memory,
        # Restart only the pipelines (regions) a lost task belongs to, not every job's.
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.host": _HOST,
        "taskmanager.bind-host": _HOST,
        "taskmanager.numberOfTaskSlots": spec.slots,
        "taskmanager.memory.process.size": spec.taskmanager_memory,
        "rest.address": _HOST,
        "rest.bind-address": _HOST,
        "rest.port": spec.rest_port,
        # A killed TaskManager's port refuses the heartbeat RPC: after
        # `heartbeat.rpc-failure-threshold` (2) refusals at this interval it is declared lost,
        # in 1-2 s. The timeout is for one that is alive but silent: a short one also
        # declared busy TaskManagers lost on 2 cores under load, and restarts fed the load.
        "heartbeat.interval": 1000,
        "heartbeat.rpc-failure-threshold": 2,
        "heartbeat.timeout": 30000,
        # RPCs between a loaded JobManager and TaskManagers (deploying many Python tasks on 2
        # cores) outlasted the 10 s default, and each timeout restarted tasks, adding load.
        "pekko.ask.timeout": "60 s",
        # Each process's port comes with its command line (cluster.json: flink_metrics_ports).
        "metrics.reporter.prom.factory.class": (
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        ),
    }
    return yaml.safe_dump(settings, sort_keys=True, width=10_000)


def python_path(*extra: Path) -> tuple[str, ...]:
    """What a TaskManager's embedded interpreter needs on its path to run the jobs' Python.

    This venv's packages, usp_feast itself (an editable install is found through a ``.pth``
    file, which PYTHONPATH entries do not read) and ``extra`` folders (a repository's
    transforms). The cluster runs on this machine, so the paths are the same there.
    """
    import site

    package_root = Path(__file__).resolve().parents[1]
    return (*site.getsitepackages(), str(package_root), *(str(p) for p in extra))


# --- Processes ----------------------------------------------------------------------------------


def _wheel_java_options() -> str:
    # The wheel's own config.yaml carries the --add-opens Flink needs on Java 17.
    config = yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text())
    return str(config["env"]["java"]["opts"]["all"])


def _flink_environment(folder: Path) -> dict[str, str]:
    from usp_feast.runner import job_environment

    python_jar = next((flink_home() / "opt").glob("flink-python-*.jar"))
    return {
        **job_environment(),
        "FLINK_CONF_DIR": str(folder / "conf"),
        "FLINK_LOG_DIR": str(folder / "log"),
        # PyFlink jobs need flink-python on the cluster's own class path: loaded per job, its
        # embedded interpreter (pemja) could not be loaded again by the next job or restart.
        "HADOOP_CLASSPATH": str(python_jar),
    }


def _spawn(command: list[str], env: dict[str, str], log: Path, new_group: bool) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_group
        )
    return process.pid


def _write_json(path: Path, data: Any) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def info(folder: Path | None = None) -> dict[str, Any] | None:
    """The running cluster's record (``rest``, ``spec``, processes), or None if none runs."""
    record = _read_json((folder or cluster_dir()) / "cluster.json")
    if record is None or not devstack.is_ours_and_alive(record["jobmanager"]):
        return None
    return dict(record)


def rest_get(rest: str, path: str, timeout: float = 5) -> Any:
    """GET one of the JobManager's REST resources (``/overview``, ``/jobs/overview``...)."""
    with urllib.request.urlopen(f"http://{rest}{path}", timeout=timeout) as response:
        return json.load(response)


def up(spec: ClusterSpec, folder: Path | None = None, wait_seconds: float = 180) -> dict[str, Any]:
    """Start the cluster and wait until every TaskManager has registered.

    Raises:
        ClusterError: A cluster already runs with another shape, the REST port is taken, or
            the cluster did not come up in time (the message names the log to read).
    """
    folder = folder or cluster_dir()
    running = info(folder)
    if running is not None:
        if running["spec"] == asdict(spec):
            return running
        raise ClusterError(
            f"a cluster with another shape runs at {running['rest']} ({running['spec']}); "
            "stop it with `usp cluster down` first"
        )
    if devstack.port_in_use(spec.rest_port):
        raise ClusterError(
            f"port {spec.rest_port} is taken; stop what listens there or set "
            "USP_FLINK_REST_PORT to a free port"
        )
    shutil.rmtree(folder / "conf", ignore_errors=True)
    (folder / "conf").mkdir(parents=True)
    for name in ("log4j-console.properties", "log4j.properties", "logback-console.xml"):
        shutil.copy(flink_home() / "conf" / name, folder / "conf" / name)
    (folder / "conf" / "config.yaml").write_text(
        render_config(spec, devstack.free_port(), _wheel_java_options())
    )
    env = _flink_environment(folder)
    # Flink's reporter: a port per process, a TaskManager place's kept by its replacements.
    flink_ports = {
        "jobmanager": devstack.free_port(),
        "taskmanagers": [devstack.free_port() for _ in range(spec.processes)],
    }
    jobmanager = _spawn(
        [
            str(flink_home() / "bin" / "jobmanager.sh"),
            "start-foreground",
            # A separate "-D": jobmanager.sh reads a first argument of any other form as a host.
            "-D",
            f"{_REPORTER_PORT}={flink_ports['jobmanager']}",
        ],
        env,
        folder / "log" / "jobmanager.out",
        new_group=True,
    )
    rest = f"{_HOST}:{spec.rest_port}"
    record = {
        "rest": rest,
        "spec": asdict(spec),
        "jobmanager": devstack.process_record(jobmanager),
        # Per TaskManager place, kept by its replacements: the jobs' scrape targets stay put.
        "job_metrics_ports": [devstack.free_port() for _ in range(spec.processes)],
        "flink_metrics_ports": flink_ports,
    }
    _write_json(folder / "cluster.json", record)  # before the supervisor, which reads it
    supervisor = _spawn(
        [sys.executable, "-m", "usp_feast.cluster", "supervise", str(folder)],
        env,
        folder / "log" / "supervisor.out",
        new_group=True,
    )
    record["supervisor"] = devstack.process_record(supervisor)
    _write_json(folder / "cluster.json", record)
    _wait_for_taskmanagers(folder, record, spec.processes, wait_seconds)
    shutil.rmtree(folder / "warm", ignore_errors=True)
    if spec.warm_up:
        try:
            warm_up(rest, spec.processes * spec.slots)
            _mark_warm(folder, taskmanagers(folder))
        except ClusterError as exc:  # the cluster works, its standbys just start cold
            logger.warning("TaskManagers not warmed up: %s", exc)
    return record


def warm_up(rest: str, parallelism: int, timeout: float = 300) -> None:
    """Make ``parallelism`` free slots' TaskManagers import the jobs' Python (a hot standby).

    Raises:
        ClusterError: The warm-up job failed; the message carries the end of its output.
    """
    from usp_feast.runner import job_environment

    try:
        done = subprocess.run(
            [sys.executable, "-m", "usp_feast.cluster", "warm-up", rest, str(parallelism)],
            env=job_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"the warm-up job did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ClusterError(f"the warm-up job failed:\n{(done.stdout + done.stderr)[-2000:]}")


def _wait_for_taskmanagers(
    folder: Path, record: dict[str, Any], count: int, wait_seconds: float
) -> None:
    deadline = time.monotonic() + wait_seconds
    registered = 0
    while time.monotonic() < deadline:
        if not devstack.is_ours_and_alive(record["jobmanager"]):
            down(folder)
            raise ClusterError(f"the JobManager exited; read {folder / 'log' / 'jobmanager.out'}")
        with contextlib.suppress(OSError, ValueError):
            registered = int(rest_get(record["rest"], "/overview")["taskmanagers"])
            if registered >= count:
                return
        time.sleep(_POLL_S)
    down(folder)
    raise ClusterError(
        f"only {registered} of {count} TaskManagers registered within {wait_seconds:.0f} s; "
        f"read the logs in {folder / 'log'}"
    )


def down(folder: Path | None = None) -> None:
    """Stop the cluster's TaskManagers (through their supervisor) and JobManager; idempotent."""
    folder = folder or cluster_dir()
    record = _read_json(folder / "cluster.json")
    if record is None:
        return
    try:
        if "supervisor" in record:  # absent if `up` failed before starting it
            devstack.stop_group(record["supervisor"], "the TaskManager supervisor")
        devstack.stop_group(record["jobmanager"], "the Flink JobManager")
    except devstack.DevStackError as exc:
        raise ClusterError(str(exc)) from None
    (folder / "cluster.json").unlink(missing_ok=True)
    (folder / "taskmanagers.json").unlink(missing_ok=True)


def taskmanagers(folder: Path | None = None) -> dict[str, int]:
    """The supervisor's live TaskManagers: Flink resource id → pid."""
    current = _read_json((folder or cluster_dir()) / "taskmanagers.json") or {}
    return {tm_id: int(entry["pid"]) for tm_id, entry in current.items()}


def job_metrics_urls(rest: str, folder: Path | None = None) -> tuple[str, ...]:
    """Where the local cluster at ``rest`` serves its jobs' own metrics (one per TaskManager).

    Empty for a cluster not started here. A TaskManager serves once a job's task has opened
    there: a standby's endpoint answers only after a failover has moved work onto it.
    """
    record = _started_here(rest, folder)
    return _urls(record["job_metrics_ports"]) if record else ()


def flink_metrics_urls(rest: str, folder: Path | None = None) -> tuple[str, ...]:
    """Flink's own reporters of the local cluster at ``rest`` (empty for one not started here).

    The JobManager's (restarts, checkpoints) first, then each TaskManager place's (tasks,
    Kafka sources).
    """
    record = _started_here(rest, folder)
    if record is None:
        return ()
    ports = record["flink_metrics_ports"]
    return _urls([ports["jobmanager"], *ports["taskmanagers"]])


def _started_here(rest: str, folder: Path | None) -> dict[str, Any] | None:
    # The running local cluster's record, if it is the one at `rest`.
    record = info(folder)
    return record if record is not None and record["rest"] == rest else None


def _urls(ports: Iterable[int]) -> tuple[str, ...]:
    return tuple(f"http://{_HOST}:{port}/metrics" for port in ports)


FINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})


def job_state(rest: str, job_id: str) -> str:
    """A job's state as the JobManager reports it (``RUNNING``, ``RESTARTING``, ...)."""
    return str(rest_get(rest, f"/jobs/{job_id}")["state"])


def cancel_job(rest: str, job_id: str) -> None:
    """Cancel a job (Flink answers at once; the tasks stop shortly after)."""
    request = urllib.request.Request(f"http://{rest}/jobs/{job_id}?mode=cancel", method="PATCH")
    with urllib.request.urlopen(request, timeout=10):
        pass


def busy_taskmanagers(rest: str) -> dict[str, set[str]]:
    """Running job id → the TaskManagers (resource ids) its tasks are deployed on."""
    busy: dict[str, set[str]] = {}
    for job in rest_get(rest, "/jobs/overview")["jobs"]:
        if job["state"] != "RUNNING":
            continue
        hosts = busy.setdefault(job["jid"], set())
        for vertex in rest_get(rest, f"/jobs/{job['jid']}")["vertices"]:
            # The subtasks' current attempts only (a failed attempt's TaskManager is history).
            detail = rest_get(rest, f"/jobs/{job['jid']}/vertices/{vertex['id']}")
            hosts.update(
                task["taskmanager-id"]
                for task in detail["subtasks"]
                if task["status"] in _PLACED and task.get("taskmanager-id")
            )
    return busy


_PLACED = frozenset({"DEPLOYING", "INITIALIZING", "RUNNING"})


def warm_taskmanagers(folder: Path | None = None) -> set[str]:
    """TaskManagers (resource ids) whose interpreter has imported the jobs' Python."""
    return {marker.name for marker in ((folder or cluster_dir()) / "warm").glob("tm-*")}


def _mark_warm(folder: Path, tm_ids: Iterable[str]) -> None:
    (folder / "warm").mkdir(exist_ok=True)
    for tm_id in tm_ids:
        (folder / "warm" / tm_id).touch()


def status(folder: Path | None = None) -> dict[str, Any]:
    """What runs: the record, Flink's overview and each TaskManager's slots."""
    record = info(folder)
    if record is None:
        return {"running": False}
    try:
        overview = rest_get(record["rest"], "/overview")
        registered = rest_get(record["rest"], "/taskmanagers")["taskmanagers"]
    except (OSError, ValueError) as exc:
        return {"running": True, "rest": record["rest"], "error": f"REST does not answer: {exc}"}
    return {
        "running": True,
        "rest": record["rest"],
        "spec": record["spec"],
        "jobs_running": overview["jobs-running"],
        "slots_total": overview["slots-total"],
        "slots_available": overview["slots-available"],
        "taskmanagers": {
            tm["id"]: {"slots": tm["slotsNumber"], "free": tm["freeSlots"]} for tm in registered
        },
    }


# --- Supervisor (its own process) ---------------------------------------------------------------


def _supervise(folder: Path) -> None:
    """Keep ``spec.processes`` TaskManagers alive until SIGTERM, replacing any that dies."""
    record = json.loads((folder / "cluster.json").read_text())
    count = ClusterSpec(**record["spec"]).processes
    ports = record["job_metrics_ports"]
    flink_ports = record["flink_metrics_ports"]["taskmanagers"]
    env = _flink_environment(folder)
    script = str(flink_home() / "bin" / "taskmanager.sh")
    running: dict[int, tuple[str, int]] = {}  # place → (resource id, pid)
    generation = 0
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for place in range(1, count + 1):
            current = running.get(place)
            if current is not None and _alive_child(current[1]):
                continue
            generation += 1
            tm_id = f"tm-{place}-{generation}"
            log = folder / "log" / f"taskmanager-{place}.out"
            # Its embedded interpreter serves the metrics of the jobs' Python steps there.
            metrics = json.dumps({"port": ports[place - 1]})
            pid = _spawn(
                [
                    script,
                    "start-foreground",
                    "-D",
                    f"taskmanager.resource-id={tm_id}",
                    "-D",
                    f"{_REPORTER_PORT}={flink_ports[place - 1]}",
                ],
                {**env, job_metrics.ENV: metrics},
                log,
                new_group=False,
            )
            if current is not None:
                logger.warning("TaskManager %s exited; started %s", current[0], tm_id)
                if record["spec"]["warm_up"]:
                    threading.Thread(
                        target=_warm_when_registered, args=(folder, record, tm_id), daemon=True
                    ).start()
            running[place] = (tm_id, pid)
            _write_json(
                folder / "taskmanagers.json",
                {tm: devstack.process_record(p) for tm, p in running.values()},
            )
        time.sleep(0.2)
    for _, pid in running.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 8  # within `usp cluster down`'s patience
    while any(_alive_child(pid) for _, pid in running.values()):
        if time.monotonic() > deadline:
            for _, pid in running.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)


def _warm_when_registered(
    folder: Path, record: dict[str, Any], tm_id: str, timeout: float = 120
) -> None:
    # A replacement is the next standby: warm it as `up` warmed the first ones.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            registered = rest_get(record["rest"], "/taskmanagers")["taskmanagers"]
            free = {tm["id"]: tm["freeSlots"] for tm in registered}
            if tm_id in free and not free[tm_id]:
                # A restarting job took every slot at once: its tasks import what they need.
                _mark_warm(folder, [tm_id])
                return
            if free.get(tm_id):
                try:
                    warm_up(record["rest"], sum(free.values()))
                    _mark_warm(folder, [tm_id])
                    logger.info("TaskManager %s warmed up", tm_id)
                except ClusterError as exc:
                    logger.warning("TaskManager %s runs cold: %s", tm_id, exc)
                return
        time.sleep(_POLL_S)
    logger.warning("TaskManager %s did not register within %.0f s", tm_id, timeout)


def _alive_child(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if sys.argv[1:2] == ["supervise"] and len(sys.argv) == 3:
        _supervise(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["warm-up"] and len(sys.argv) == 4:
        from usp_feast.flink import warm_up_job

        warm_up_job(sys.argv[2], python_path(), int(sys.argv[3]))
    else:
        sys.exit(
            "usage: python -m usp_feast.cluster supervise CLUSTER_DIR\n"
            "       python -m usp_feast.cluster warm-up REST_HOST:PORT PARALLELISM"
        )
