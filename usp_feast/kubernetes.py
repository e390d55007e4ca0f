"""Kubernetes deployment generated from definitions: one Flink Kubernetes Operator application.

``usp generate`` writes, beside the repository in ``deploy/kubernetes/``:

* ``flinkdeployment.yaml``: a ``FlinkDeployment`` (``flink.apache.org/v1beta1``, application
  mode) running every signal, join, segment and session engagement as one Flink job, the
  grouping ``usp run --all`` uses: ``streaming/usp_job.py`` started by PyFlink's
  ``PythonDriver`` with the generated job configs, a standby TaskManager kept warm, durable
  checkpoints, Kubernetes HA, an exponential-delay restart strategy, heartbeats that notice a
  lost TaskManager in seconds, and both metrics endpoints (Flink's reporter, the job's own) on
  the pods;
* ``configmap.yaml``: where Kafka and Redis are (addresses, no credentials);
* ``secret.template.yaml``: the keys of the Secret the pods read credentials from, without
  values (the Secret is created with ``kubectl create secret``, never from a file here);
* ``kustomization.yaml``: the resources to apply (``kubectl apply -k``), the Secret excepted;
* ``prometheus-scrape.yml``: a Prometheus scrape job that finds the pods by their annotations
  and labels their series the way ``monitoring/prometheus.yml`` does for local jobs, so the
  generated rules and dashboards work unchanged;
* ``README.md``: how to use them.

Credentials (the Redis password, Kafka SASL user and password) reach the pods only as
``env`` entries that reference the Secret (``valueFrom.secretKeyRef``). Rendering reads its
arguments only, never the environment, so no value a shell or CI job holds can end up in a
generated file. Where a setting has to be deployment-specific (image, bucket, addresses), it
is a :class:`KubernetesSettings` field with a placeholder default, changed in an overlay.

Example:
    >>> from pathlib import Path
    >>> from usp_feast.spec import SignalSpec
    >>> spec = SignalSpec(
    ...     name="search", owner="search-team", source={"topic": "events.search"},
    ...     fields={"query": "string"}, transform="transforms.SearchTransform",
    ...     retention="30d", validation="search")
    >>> files = render_kubernetes(Definitions(repo=Path("."), signals=(spec,)))
    >>> sorted(files)  # doctest: +NORMALIZE_WHITESPACE
    ['README.md', 'configmap.yaml', 'flinkdeployment.yaml', 'kustomization.yaml',
     'prometheus-scrape.yml', 'secret.template.yaml']
    >>> "slotmanager.redundant-taskmanager-num: '1'" in files["flinkdeployment.yaml"]
    True

"""

from __future__ import annotations

import copy
import io
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from usp_feast.connections import (
    KAFKA_MECHANISMS,
    KAFKA_PROTOCOLS,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_PASSWORD,
    KAFKA_SASL_USERNAME,
    KAFKA_SECURITY_PROTOCOL,
    REDIS_PASSWORD,
)
from usp_feast.definitions import Definitions, JobDefinition
from usp_feast.jobs import AnyJobConfig, config_file, parse_job_config, render_job_configs
from usp_feast.metric_names import job_name, job_part

__all__ = [
    "DEFAULT_SETTINGS",
    "ENDPOINT_ENV",
    "FLINK_METRICS_PORT_NAME",
    "JOB_ANNOTATION",
    "SCRAPE_ANNOTATION",
    "SECRET_ENV",
    "USP_METRICS_PORT_NAME",
    "KubernetesError",
    "KubernetesSettings",
    "render_kubernetes",
]

SCRAPE_ANNOTATION = "usp-feast/scrape"
"""Pod annotation (``"true"``) that ``prometheus-scrape.yml`` keeps pods by."""
JOB_ANNOTATION = "usp-feast/job"
"""Pod annotation naming the usp job (``search+view+...``): the series' ``job`` label. An
annotation, not a label: label values may not hold ``+`` nor exceed 63 characters."""
FLINK_METRICS_PORT_NAME = "flink-metrics"
"""Container port of Flink's Prometheus reporter (JobManager and TaskManagers)."""
USP_METRICS_PORT_NAME = "usp-metrics"
"""Container port of the job's own metrics (TaskManagers: the Python steps run there)."""

SECRET_ENV = {
    REDIS_PASSWORD: "redis-password",
    KAFKA_SASL_USERNAME: "kafka-sasl-username",
    KAFKA_SASL_PASSWORD: "kafka-sasl-password",
}
"""Environment variable (as :mod:`usp_feast.connections` reads it) → key in the Secret it is
read from. Never a value in a file."""
ENDPOINT_ENV = (
    "USP_KAFKA_BOOTSTRAP",
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SASL_MECHANISM,
    "USP_REDIS_URL",
)
"""Variables read from the ConfigMap: where the services are and how to reach them, no
credentials."""

_MAIN_CONTAINER = "flink-main-container"  # the name Flink's pod templates require
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_REDUNDANT_TM_DOC = (
    "https://nightlies.apache.org/flink/flink-docs-stable/docs/deployment/config/"
    "#slotmanager-redundant-taskmanager-num"
)


class KubernetesError(ValueError):
    """The Kubernetes files cannot be generated; the message says which setting and why."""


@dataclass(frozen=True)
class KubernetesSettings:
    """What the generated deployment assumes about the cluster it runs on.

    Defaults are placeholders for what only the deployment knows (image, bucket, addresses);
    none of them is a secret, and no secret may be put in one.
    """

    name: str = "usp-signals"
    """FlinkDeployment name: Flink's cluster id, prefix of its pods, services and HA
    ConfigMaps (DNS-1035, at most 45 characters, which the operator enforces)."""
    image: str = "usp-feast:0.1.0"
    """Image built as docs/kubernetes.md shows: Flink, a Python venv with this package, the
    repository, the generated configs and the jars of scripts/setup.sh."""
    flink_version: str = "2.3.0"
    """Flink in the image; must equal the PyFlink the venv holds (apache-flink)."""
    service_account: str = "flink"
    """Service account allowed to create pods and edit ConfigMaps (the operator's default)."""
    app_root: str = "/opt/usp"
    """Where the image holds feature_repo/, validation/, streaming/ and the venv (.venv)."""
    python_version: str = "3.11"
    parallelism: int = 2
    """Subtasks per operator, spread over as many slots (one TaskManager pod each, with the
    default ``task_slots``)."""
    task_slots: int = 1
    """Slots per TaskManager. One: in thread mode a TaskManager runs every Python step of its
    slots in one interpreter, under one GIL, so more Python throughput takes more pods."""
    standby_taskmanagers: int = 1
    checkpoint_dir: str = "s3://usp-flink/checkpoints"
    savepoint_dir: str = "s3://usp-flink/savepoints"
    ha_dir: str = "s3://usp-flink/ha"
    heartbeat_interval: timedelta = timedelta(seconds=2)
    heartbeat_timeout: timedelta = timedelta(seconds=10)
    restart_initial_backoff: timedelta = timedelta(seconds=1)
    restart_max_backoff: timedelta = timedelta(minutes=1)
    restart_reset_after: timedelta = timedelta(minutes=10)
    """Running this long without a failure resets the restart backoff to its initial value."""
    jobmanager_memory: str = "2048m"
    jobmanager_cpu: float = 1
    taskmanager_memory: str = "4096m"
    taskmanager_cpu: float = 2
    flink_metrics_port: int = 9249
    usp_metrics_port: int = 9250
    kafka_bootstrap: str = "kafka.kafka.svc:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``: with a SASL protocol the
    Secret's SASL keys are required, otherwise they are left out."""
    kafka_sasl_mechanism: str | None = None
    """``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``, with a SASL protocol."""
    redis_url: str = "redis://redis.redis.svc:6379"
    """Redis connection string without a password (``rediss://`` for TLS, an ACL user may be
    named: ``rediss://usp@host:6380``); the password comes from the Secret."""

    @property
    def kafka_sasl(self) -> bool:
        """Whether Kafka clients log in with SASL (then the SASL keys are required)."""
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def config_map(self) -> str:
        """Name of the ConfigMap with the Kafka and Redis addresses."""
        return f"{self.name}-endpoints"

    @property
    def secret(self) -> str:
        """Name of the Secret holding the credentials (created by hand, see the README)."""
        return f"{self.name}-credentials"

    @property
    def operator_flink_version(self) -> str:
        """The operator's ``flinkVersion`` value: ``2.3.0`` → ``v2_3``."""
        major, minor = self.flink_version.split(".")[:2]
        return f"v{major}_{minor}"

    @property
    def python(self) -> str:
        """The venv's interpreter in the image."""
        return f"{self.app_root}/.venv/bin/python"

    def check(self) -> None:
        """Raise :class:`KubernetesError` naming every setting that cannot work.

        Raises:
            KubernetesError: When a setting is out of range or malformed.

        """
        problems = []
        if not _DNS_1035.fullmatch(self.name) or len(self.name) > 45:
            problems.append(
                f"name {self.name!r} must be lowercase letters, digits and '-', start with a "
                "letter and be at most 45 characters (it names Kubernetes objects)"
            )
        if not re.fullmatch(r"\d+\.\d+\.\d+", self.flink_version):
            problems.append(f"flink_version {self.flink_version!r} must look like 2.3.0")
        if self.parallelism < 1:
            problems.append(f"parallelism {self.parallelism} must be at least 1")
        if self.task_slots < 1:
            problems.append(f"task_slots {self.task_slots} must be at least 1")
        if self.standby_taskmanagers < 0:
            problems.append(f"standby_taskmanagers {self.standby_taskmanagers} must be >= 0")
        if self.heartbeat_timeout <= self.heartbeat_interval:
            problems.append("heartbeat_timeout must be longer than heartbeat_interval")
        if self.kafka_security_protocol not in KAFKA_PROTOCOLS:
            problems.append(
                f"kafka_security_protocol {self.kafka_security_protocol!r} must be one of "
                f"{', '.join(KAFKA_PROTOCOLS)}"
            )
        if self.kafka_sasl != (self.kafka_sasl_mechanism is not None):
            problems.append(
                "kafka_sasl_mechanism must be set exactly when kafka_security_protocol is "
                f"SASL_SSL or SASL_PLAINTEXT (one of {', '.join(KAFKA_MECHANISMS)})"
            )
        elif self.kafka_sasl_mechanism not in (None, *KAFKA_MECHANISMS):
            problems.append(
                f"kafka_sasl_mechanism {self.kafka_sasl_mechanism!r} must be one of "
                f"{', '.join(KAFKA_MECHANISMS)}"
            )
        redis = urlsplit(self.redis_url)
        if redis.scheme not in ("redis", "rediss") or not redis.hostname or redis.password:
            problems.append(
                f"redis_url {_shown(self.redis_url)!r} must be redis://host:port or "
                "rediss://[user@]host:port, without a password (it comes from the Secret)"
            )
        for field in ("checkpoint_dir", "savepoint_dir", "ha_dir"):
            value = getattr(self, field)
            if "://" not in value or value.startswith("file://"):
                problems.append(
                    f"{field} {value!r} must be a durable URI every pod reaches (s3://, gs://, "
                    "abfss://, hdfs://), not a pod's local disk"
                )
        if self.flink_metrics_port == self.usp_metrics_port:
            problems.append("flink_metrics_port and usp_metrics_port must differ")
        if problems:
            raise KubernetesError("Kubernetes settings: " + "; ".join(problems))


DEFAULT_SETTINGS = KubernetesSettings()


def render_kubernetes(
    definitions: Definitions, settings: KubernetesSettings = DEFAULT_SETTINGS
) -> dict[str, str]:
    """File name in ``deploy/kubernetes/`` → text of every file (deterministic bytes).

    Pure: reads ``definitions`` and ``settings`` only (not the environment). A repository with
    no definition to run yields no files.

    Raises:
        KubernetesError: When a setting cannot work (see :meth:`KubernetesSettings.check`).

    """
    settings.check()
    configs = _job_configs(definitions)
    if not configs:
        return {}
    job = job_name(job_part(c.kind, c.definition) for _, c in configs)
    files = {
        "flinkdeployment.yaml": _flink_deployment(configs, job, settings),
        "configmap.yaml": _config_map(settings),
        "secret.template.yaml": _secret_template(settings),
        "kustomization.yaml": _kustomization(),
        "prometheus-scrape.yml": _scrape_config(),
        "README.md": _readme(configs, job, settings),
    }
    return dict(sorted(files.items()))


def _job_configs(definitions: Definitions) -> list[tuple[str, AnyJobConfig]]:
    """Config file → config of every definition, in the order ``usp run --all`` runs them."""
    specs: list[JobDefinition] = [
        *definitions.signals,
        *definitions.segments,
        *definitions.sessions,
    ]
    rendered = render_job_configs(definitions)
    return [(config_file(s), parse_job_config(rendered[config_file(s)])) for s in specs]


# --- FlinkDeployment --------------------------------------------------------------------------


def _duration(value: timedelta) -> str:
    """A duration as Flink reads it (``2 s``, ``10 min``)."""
    seconds = int(value.total_seconds())
    if value != timedelta(seconds=seconds):
        return f"{int(value / timedelta(milliseconds=1))} ms"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _flink_configuration(
    configs: list[tuple[str, AnyJobConfig]], s: KubernetesSettings
) -> CommentedMap:
    interval = min(c.checkpoint_interval_ms for _, c in configs)
    entries: list[tuple[str, str, str | None]] = [
        (
            "taskmanager.numberOfTaskSlots",
            str(s.task_slots),
            "One slot per TaskManager: in thread mode a TaskManager's Python steps share one\n"
            "interpreter (one GIL), so Python throughput scales with pods, not slots.",
        ),
        (
            "slotmanager.redundant-taskmanager-num",
            str(s.standby_taskmanagers),
            "Standby TaskManagers kept running beyond what the job's slots need: when one is\n"
            "lost the job restarts on the standby at once instead of waiting for a new pod\n"
            "to be scheduled and started. Honoured by active resource managers (native\n"
            "Kubernetes, which `mode: native` below selects; not standalone mode):\n"
            f"{_REDUNDANT_TM_DOC}",
        ),
        (
            "heartbeat.interval",
            _duration(s.heartbeat_interval),
            "A TaskManager that stops answering is declared lost within the timeout (Flink's\n"
            "defaults, 10 s / 50 s, take close to a minute); a pod deleted outright is seen at\n"
            "once through the Kubernetes watch.",
        ),
        ("heartbeat.timeout", _duration(s.heartbeat_timeout), None),
        (
            "restart-strategy.type",
            "exponential-delay",
            "Restart at once after a first failure, back off while failures repeat.",
        ),
        (
            "restart-strategy.exponential-delay.initial-backoff",
            _duration(s.restart_initial_backoff),
            None,
        ),
        ("restart-strategy.exponential-delay.max-backoff", _duration(s.restart_max_backoff), None),
        ("restart-strategy.exponential-delay.backoff-multiplier", "2.0", None),
        ("restart-strategy.exponential-delay.jitter-factor", "0.1", None),
        (
            "restart-strategy.exponential-delay.reset-backoff-threshold",
            _duration(s.restart_reset_after),
            None,
        ),
        (
            "execution.checkpointing.interval",
            f"{interval} ms",
            "Durable checkpoints every pod can reach (the key was state.checkpoints.dir\n"
            "before Flink 1.20, still read as a fallback). The interval is the job configs'.",
        ),
        ("execution.checkpointing.dir", s.checkpoint_dir, None),
        ("execution.checkpointing.savepoint-dir", s.savepoint_dir, None),
        (
            "execution.checkpointing.externalized-checkpoint-retention",
            "RETAIN_ON_CANCELLATION",
            None,
        ),
        (
            "high-availability.type",
            "kubernetes",
            "JobManager failover: leader election and checkpoint pointers in ConfigMaps,\n"
            "job metadata under storageDir; `upgradeMode: last-state` relies on it.",
        ),
        ("high-availability.storageDir", s.ha_dir, None),
        (
            "python.execution-mode",
            "thread",
            "Python steps run inside the TaskManager JVM (the mode the jobs are built for).",
        ),
        ("python.executable", s.python, None),
        ("python.client.executable", s.python, None),
        (
            "python.pythonpath",
            f"{s.app_root}/.venv/lib/python{s.python_version}/site-packages:"
            f"{s.app_root}/feature_repo",
            "Thread mode's interpreter reads no .pth file: the venv's packages and the\n"
            "repository (transform classes) go on its path, as streaming/usp_job.py does.",
        ),
        (
            "metrics.reporter.prom.factory.class",
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            "Flink's own metrics (restarts, checkpoints, backpressure) on every pod, port\n"
            f"'{FLINK_METRICS_PORT_NAME}'; monitoring/prometheus/flink.rules.yml watches them.",
        ),
        ("metrics.reporter.prom.port", str(s.flink_metrics_port), None),
    ]
    conf = CommentedMap()
    for key, value, comment in entries:
        conf[key] = value
        if comment:
            conf.yaml_set_comment_before_after_key(key, before=comment, indent=4)
    return conf


def _env(s: KubernetesSettings) -> list[dict[str, Any]]:
    """Environment of every pod: endpoints from the ConfigMap, credentials from the Secret."""
    env: list[dict[str, Any]] = []
    for variable in ENDPOINT_ENV:
        ref: dict[str, Any] = {"name": s.config_map, "key": variable}
        if variable == KAFKA_SASL_MECHANISM:
            ref["optional"] = True  # in the ConfigMap only with a SASL protocol
        env.append({"name": variable, "valueFrom": {"configMapKeyRef": ref}})
    for variable, key in SECRET_ENV.items():
        ref = {"name": s.secret, "key": key}
        if variable != REDIS_PASSWORD and not s.kafka_sasl:
            # Set, they would make usp_feast.connections refuse a protocol without login.
            ref["optional"] = True
        env.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
    env.append({"name": "USP_STATE_DIR", "value": "/tmp/usp"})
    if s.checkpoint_dir.startswith("s3://"):
        # The official image's entrypoint copies these opt/ jars into plugins/.
        env.append(
            {
                "name": "ENABLE_BUILT_IN_PLUGINS",
                "value": f"flink-s3-fs-presto-{s.flink_version}.jar",
            }
        )
    return env


def _shown(url: str) -> str:
    """A connection string with any password replaced, for messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _pod_template(
    env: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    job: str,
    affinity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": _MAIN_CONTAINER, "env": env, "ports": ports}]}
    if affinity is not None:
        spec["affinity"] = affinity
    return {
        "metadata": {"annotations": {SCRAPE_ANNOTATION: "true", JOB_ANNOTATION: job}},
        "spec": spec,
    }


def _port(name: str, number: int) -> dict[str, Any]:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _job_args(
    configs: list[tuple[str, AnyJobConfig]], s: KubernetesSettings, job: str
) -> list[str]:
    # PythonDriver reads its own options first; everything after the script goes to it.
    return [
        "-pyclientexec",
        s.python,
        "-pyexec",
        s.python,
        "-py",
        f"{s.app_root}/streaming/usp_job.py",
        "--repo",
        f"{s.app_root}/feature_repo",
        "--parallelism",
        str(s.parallelism),
        # The job sets its own checkpoint folder (a local one by default): point it at the bucket.
        "--checkpoints",
        f"{s.checkpoint_dir}/{job}",
        "--flink-metrics-port",
        str(s.flink_metrics_port),
        *(f"{s.app_root}/streaming/{name}" for name, _ in configs),
    ]


def _flink_deployment(
    configs: list[tuple[str, AnyJobConfig]], job: str, s: KubernetesSettings
) -> str:
    env = _env(s)
    # The TaskManagers run the Python steps, so they serve the job's own metrics, on every
    # interface (the default is loopback). The job's name and Kafka travel in its operators.
    metrics = json.dumps({"host": "0.0.0.0", "port": s.usp_metrics_port}, sort_keys=True)
    # Copies, so the YAML repeats the entries rather than writing anchors and aliases.
    taskmanager_env = [*copy.deepcopy(env), {"name": "USP_JOB_METRICS", "value": metrics}]
    # Active TaskManagers and the standby on different nodes where possible, so one node's
    # loss leaves the standby to take over.
    spread = {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {
                            "matchLabels": {"app": s.name, "component": "taskmanager"}
                        },
                    },
                }
            ]
        }
    }
    document = {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": {
            "name": s.name,
            "labels": {"app.kubernetes.io/name": s.name, "app.kubernetes.io/part-of": "usp-feast"},
        },
        "spec": {
            "image": s.image,
            "imagePullPolicy": "IfNotPresent",
            "flinkVersion": s.operator_flink_version,
            "mode": "native",
            "serviceAccount": s.service_account,
            "flinkConfiguration": _flink_configuration(configs, s),
            "jobManager": {
                "replicas": 1,
                "resource": {"memory": s.jobmanager_memory, "cpu": s.jobmanager_cpu},
                "podTemplate": _pod_template(
                    env, [_port(FLINK_METRICS_PORT_NAME, s.flink_metrics_port)], job
                ),
            },
            "taskManager": {
                "resource": {"memory": s.taskmanager_memory, "cpu": s.taskmanager_cpu},
                "podTemplate": _pod_template(
                    taskmanager_env,
                    [
                        _port(FLINK_METRICS_PORT_NAME, s.flink_metrics_port),
                        _port(USP_METRICS_PORT_NAME, s.usp_metrics_port),
                    ],
                    job,
                    spread,
                ),
            },
            "job": {
                "jarURI": f"local:///opt/flink/opt/flink-python-{s.flink_version}.jar",
                "entryClass": "org.apache.flink.client.python.PythonDriver",
                "args": _job_args(configs, s, job),
                "parallelism": s.parallelism,
                "upgradeMode": "last-state",
                "state": "running",
            },
        },
    }
    active = -(-s.parallelism // s.task_slots)
    header = (
        "# Flink Kubernetes Operator application generated by `usp generate`; do not edit.\n"
        f"# One Flink job, `usp: {job}`,\n"
        f"# running {len(configs)} definitions as `usp run --all` does. Parallelism "
        f"{s.parallelism} on {s.task_slots} slot(s) per TaskManager:\n"
        f"# {active} active TaskManager pod(s) plus {s.standby_taskmanagers} standby. "
        "Credentials only as secretKeyRef; see README.md here.\n"
    )
    return header + _yaml(document)


# --- Other files ------------------------------------------------------------------------------


def _config_map(s: KubernetesSettings) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": s.config_map, "labels": {"app.kubernetes.io/part-of": "usp-feast"}},
        "data": _endpoints(s),
    }
    header = (
        "# Where the jobs find Kafka and Redis, generated by `usp generate`; do not edit (set\n"
        "# the addresses in an overlay). Addresses only: credentials are in the Secret.\n"
    )
    return header + _yaml(document)


def _endpoints(s: KubernetesSettings) -> dict[str, str]:
    data = {
        "USP_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        KAFKA_SECURITY_PROTOCOL: s.kafka_security_protocol,
        KAFKA_SASL_MECHANISM: s.kafka_sasl_mechanism,
        "USP_REDIS_URL": s.redis_url,
    }
    return {key: value for key, value in data.items() if value is not None}


def _secret_keys(s: KubernetesSettings) -> list[str]:
    """The Secret keys a deployment with these settings needs."""
    return [key for variable, key in SECRET_ENV.items() if _needed(variable, s) == "required"]


def _secret_template(s: KubernetesSettings) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": s.secret, "labels": {"app.kubernetes.io/part-of": "usp-feast"}},
        "type": "Opaque",
        "stringData": {key: "" for key in SECRET_ENV.values()},
    }
    literals = " ".join(f"--from-literal={key}=..." for key in _secret_keys(s))
    header = (
        "# TEMPLATE: the keys the pods read, without values. Not part of kustomization.yaml;\n"
        "# never fill it in and commit it. Create the Secret from your secret store instead:\n"
        f"#   kubectl create secret generic {s.secret} {literals}\n"
        + (
            "# All keys are required (Kafka logs in with SASL).\n"
            if s.kafka_sasl
            else "# Leave the Kafka SASL keys out while Kafka is not reached over SASL.\n"
        )
    )
    return header + _yaml(document)


def _kustomization() -> str:
    document = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["configmap.yaml", "flinkdeployment.yaml"],
    }
    header = (
        "# `kubectl apply -k deploy/kubernetes` (after creating the Secret; see README.md).\n"
        "# Generated by `usp generate`; do not edit: point an overlay at this folder instead.\n"
    )
    return header + _yaml(document)


def _meta(annotation: str) -> str:
    """Prometheus' meta label of a pod annotation (every character outside [a-zA-Z0-9_] → _)."""
    return "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", annotation)


def _scrape_config() -> str:
    ports = f"({USP_METRICS_PORT_NAME.split('-')[0]}|{FLINK_METRICS_PORT_NAME.split('-')[0]})"
    document = {
        "scrape_configs": [
            {
                "job_name": "usp-kubernetes",
                "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "pod"}],
                "relabel_configs": [
                    {
                        "source_labels": [_meta(SCRAPE_ANNOTATION)],
                        "regex": "true",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": f"{ports}-metrics",
                        "action": "keep",
                    },
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": f"{ports}-metrics",
                        "target_label": "source",
                    },
                    {
                        "source_labels": [_meta(JOB_ANNOTATION)],
                        "regex": "(.+)",
                        "target_label": "job",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ]
    }
    header = (
        "# Prometheus scrape job for the pods of flinkdeployment.yaml, generated by\n"
        "# `usp generate`; do not edit. Add it to the scrape_configs of a Prometheus in (or\n"
        "# reaching) the cluster, beside the rule_files of monitoring/prometheus.yml. It keeps\n"
        f"# the pods annotated {SCRAPE_ANNOTATION}=true, one target per port named\n"
        f"# {USP_METRICS_PORT_NAME} or {FLINK_METRICS_PORT_NAME}, and labels them as local "
        "jobs are: `job` the usp job\n"
        f'# (annotation {JOB_ANNOTATION}), `source` "usp" or "flink". No ServiceMonitor or\n'
        "# PodMonitor needed; the Prometheus needs RBAC to list pods.\n"
    )
    return header + _yaml(document)


def _yaml(document: Any) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def _needed(variable: str, s: KubernetesSettings) -> str:
    if variable == REDIS_PASSWORD or s.kafka_sasl:
        return "required"
    return f"left out while {KAFKA_SECURITY_PROTOCOL} is {s.kafka_security_protocol}"


def _readme(configs: list[tuple[str, AnyJobConfig]], job: str, s: KubernetesSettings) -> str:
    rows = "\n".join(
        f"| {config.kind} | `{config.definition}` | `streaming/{name}` |"
        for name, config in configs
    )
    secrets = "\n".join(
        f"| `{variable}` | `{key}` | {_needed(variable, s)} |"
        for variable, key in SECRET_ENV.items()
    )
    literals = " \\\n    ".join(f"--from-literal={key}=..." for key in _secret_keys(s))
    application = (
        "the application: `streaming/usp_job.py` through PyFlink's `PythonDriver`, parallelism "
        f"{s.parallelism}, {s.task_slots} slot(s) per TaskManager, {s.standby_taskmanagers} "
        f"standby TaskManager(s), checkpoints under `{s.checkpoint_dir}`, Kubernetes HA, "
        "exponential-delay restarts"
    )
    return f"""# Kubernetes deployment (generated)

Generated by `usp generate` from the definitions; do not edit: change a definition and run
`usp generate` again (`usp generate --check` fails while these files are stale). Image, design
and what the standby TaskManager buys: `docs/kubernetes.md`.

One `FlinkDeployment` for the [Flink Kubernetes Operator](https://nightlies.apache.org/flink/flink-kubernetes-operator-docs-stable/)
runs every definition in one Flink job, `usp: {job}`, the grouping `usp run --all` uses:

| kind | definition | job config |
|---|---|---|
{rows}

| file | what |
|---|---|
| `flinkdeployment.yaml` | {application} |
| `configmap.yaml` | `{s.config_map}`: Kafka bootstrap servers and the Redis address |
| `secret.template.yaml` | the keys of Secret `{s.secret}`, without values (not applied) |
| `kustomization.yaml` | `kubectl apply -k` over the two files above |
| `prometheus-scrape.yml` | a Prometheus scrape job finding the pods (no ServiceMonitor needed) |

## Deploy

With the operator installed and the image built and pushed (`docs/kubernetes.md`):

    kubectl create secret generic {s.secret} \\
    {literals}
    kubectl apply -k deploy/kubernetes
    kubectl get flinkdeployment {s.name}

Placeholders to set in an overlay (a kustomize patch of this folder): the image
(`{s.image}`), the bucket (`{s.checkpoint_dir}`, `{s.savepoint_dir}`, `{s.ha_dir}`), the
addresses in `{s.config_map}`, and resources. Or pass other
`usp_feast.kubernetes.KubernetesSettings` to `render_kubernetes`.

## Credentials

Only from the Secret, through `valueFrom.secretKeyRef`, into the variables
`usp_feast.connections` reads; no file here holds one, and rendering never reads the
environment. The ConfigMap holds the rest: `USP_KAFKA_BOOTSTRAP`, `{KAFKA_SECURITY_PROTOCOL}`
(`{s.kafka_security_protocol}`), `{KAFKA_SASL_MECHANISM}` (with a SASL protocol) and
`USP_REDIS_URL` (`{s.redis_url}`, no password).

| variable | Secret key | |
|---|---|---|
{secrets}

## Metrics

Every pod is annotated `{SCRAPE_ANNOTATION}: "true"` and `{JOB_ANNOTATION}: <job>` and names its
ports: `{FLINK_METRICS_PORT_NAME}` ({s.flink_metrics_port}, Flink's reporter, every pod) and
`{USP_METRICS_PORT_NAME}` ({s.usp_metrics_port}, the job's own metrics, TaskManagers; set
through `USP_JOB_METRICS`). `prometheus-scrape.yml` turns them into targets labelled like
local jobs (`job`, `source`), so `monitoring/prometheus/*.rules.yml` and the Grafana
dashboards apply as they are.
"""
