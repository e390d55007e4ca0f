"""Generated Kubernetes deployment: golden files, the fields failover needs, no secret values."""

from __future__ import annotations

import doctest
import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from usp_feast import kubernetes
from usp_feast.cli import main
from usp_feast.connections import SECRET_VARIABLES
from usp_feast.definitions import Definitions, load_definitions
from usp_feast.jobs import config_file, parse_job_config, render_job_configs
from usp_feast.kubernetes import (
    DEFAULT_SETTINGS,
    FLINK_METRICS_PORT_NAME,
    JOB_ANNOTATION,
    SCRAPE_ANNOTATION,
    SECRET_ENV,
    USP_METRICS_PORT_NAME,
    KubernetesError,
    KubernetesSettings,
    render_kubernetes,
)
from usp_feast.metric_names import job_name, job_part

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions(ROOT / "feature_repo")


@pytest.fixture(scope="module")
def rendered(definitions: Definitions) -> dict[str, str]:
    return render_kubernetes(definitions)


def _yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def _deployment(files: dict[str, str]) -> dict[str, Any]:
    document = _yaml(files["flinkdeployment.yaml"])
    assert isinstance(document, dict)
    return document


def _container(role: dict[str, Any]) -> dict[str, Any]:
    (container,) = role["podTemplate"]["spec"]["containers"]
    assert container["name"] == "flink-main-container"  # the name Flink merges into
    return container


def _env(role: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = _container(role)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), names
    return {e["name"]: e for e in entries}


def _ports(role: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in _container(role)["ports"]}


def _run_all_order(definitions: Definitions) -> list[str]:
    """Config files in the order `usp run --all` passes them to streaming/usp_job.py."""
    specs = [*definitions.signals, *definitions.segments, *definitions.sessions]
    return [config_file(spec) for spec in specs]


def _job_name(definitions: Definitions) -> str:
    configs = render_job_configs(definitions)
    return job_name(
        job_part(c.kind, c.definition)
        for c in (parse_job_config(configs[name]) for name in _run_all_order(definitions))
    )


# --- golden files and determinism -------------------------------------------------------------


def test_the_example_repo_s_deployment_matches_the_checked_in_folder(
    rendered: dict[str, str],
) -> None:
    on_disk = {p.name for p in DEPLOY.iterdir() if p.is_file()}
    assert on_disk == set(rendered), "deploy/kubernetes/ holds other files than `usp generate`"
    for name, text in rendered.items():
        assert (DEPLOY / name).read_text() == text, f"deploy/kubernetes/{name} is stale"


def test_rendering_is_deterministic(rendered: dict[str, str]) -> None:
    again = render_kubernetes(load_definitions(ROOT / "feature_repo"))
    assert again == rendered
    assert list(again) == list(rendered)
    assert [text.encode() for text in again.values()] == [t.encode() for t in rendered.values()]


def test_every_yaml_file_parses_and_names_what_it_is(rendered: dict[str, str]) -> None:
    kinds = {
        "flinkdeployment.yaml": ("flink.apache.org/v1beta1", "FlinkDeployment"),
        "configmap.yaml": ("v1", "ConfigMap"),
        "secret.template.yaml": ("v1", "Secret"),
        "kustomization.yaml": ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    }
    for name, (api_version, kind) in kinds.items():
        document = _yaml(rendered[name])
        assert (document["apiVersion"], document["kind"]) == (api_version, kind), name
    # Applied by `kubectl apply -k`: everything but the Secret template.
    assert _yaml(rendered["kustomization.yaml"])["resources"] == [
        "configmap.yaml",
        "flinkdeployment.yaml",
    ]
    assert _yaml(rendered["prometheus-scrape.yml"])["scrape_configs"]
    # Plain YAML: no anchors or aliases that a reader (or a kustomize patch) must resolve.
    for name, text in rendered.items():
        if name.endswith((".yaml", ".yml")):
            assert not re.search(r"[&*]id\d+", text), name


def test_a_repository_without_definitions_gets_no_files() -> None:
    assert render_kubernetes(Definitions(repo=ROOT / "feature_repo", signals=())) == {}


# --- what failover needs ----------------------------------------------------------------------


def test_the_deployment_keeps_a_standby_taskmanager_in_native_mode(
    rendered: dict[str, str],
) -> None:
    spec = _deployment(rendered)["spec"]
    conf = spec["flinkConfiguration"]
    # Flink reads every value as a string; a bare YAML number would fail the CRD's schema.
    assert all(isinstance(value, str) for value in conf.values()), conf
    assert conf["slotmanager.redundant-taskmanager-num"] == "1"
    # Only active resource managers start redundant TaskManagers: native, not standalone.
    assert spec["mode"] == "native"
    assert "taskManager" in spec and "replicas" not in spec["taskManager"]
    assert conf["taskmanager.numberOfTaskSlots"] == "1"
    assert spec["job"]["parallelism"] == DEFAULT_SETTINGS.parallelism > 1
    # The standby should not share a node with the TaskManagers it stands in for.
    affinity = spec["taskManager"]["podTemplate"]["spec"]["affinity"]["podAntiAffinity"]
    term = affinity["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == {
        "app": DEFAULT_SETTINGS.name,
        "component": "taskmanager",
    }


def _seconds(duration: str) -> float:
    number, unit = duration.split()
    return float(number) * {"ms": 0.001, "s": 1, "min": 60}[unit]


def test_checkpoints_restarts_heartbeats_and_ha(
    rendered: dict[str, str], definitions: Definitions
) -> None:
    spec = _deployment(rendered)["spec"]
    conf = spec["flinkConfiguration"]
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir"):
        assert conf[key].startswith("s3://"), key
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == (
        "RETAIN_ON_CANCELLATION"
    )
    intervals = {
        parse_job_config(text).checkpoint_interval_ms
        for text in render_job_configs(definitions).values()
    }
    assert conf["execution.checkpointing.interval"] == f"{min(intervals)} ms"
    assert conf["restart-strategy.type"] == "exponential-delay"
    assert _seconds(conf["restart-strategy.exponential-delay.initial-backoff"]) <= 1
    assert _seconds(conf["restart-strategy.exponential-delay.max-backoff"]) == 60
    # A TaskManager that stops answering is noticed in seconds, not Flink's default 50 s.
    assert _seconds(conf["heartbeat.interval"]) < _seconds(conf["heartbeat.timeout"]) <= 15
    assert conf["high-availability.type"] == "kubernetes"
    assert conf["high-availability.storageDir"].startswith("s3://")
    assert spec["job"]["upgradeMode"] == "last-state"  # needs the HA metadata above
    assert spec["serviceAccount"] == "flink"
    # s3:// needs the S3 file system plugin, which the official image enables by this variable.
    for role in ("jobManager", "taskManager"):
        plugins = _env(spec[role])["ENABLE_BUILT_IN_PLUGINS"]["value"]
        assert plugins == f"flink-s3-fs-presto-{DEFAULT_SETTINGS.flink_version}.jar"


def test_the_flink_version_is_the_venv_s_pyflink(rendered: dict[str, str]) -> None:
    # Client (the image's PyFlink) and cluster must be one Flink version.
    pyflink = version("apache-flink")
    spec = _deployment(rendered)["spec"]
    assert DEFAULT_SETTINGS.flink_version == pyflink
    assert spec["flinkVersion"] == "v" + "_".join(pyflink.split(".")[:2])
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{pyflink}.jar"
    assert spec["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"


def test_python_runs_in_thread_mode_from_the_image_s_venv(rendered: dict[str, str]) -> None:
    conf = _deployment(rendered)["spec"]["flinkConfiguration"]
    python = f"{DEFAULT_SETTINGS.app_root}/.venv/bin/python"
    assert conf["python.execution-mode"] == "thread"
    assert conf["python.executable"] == conf["python.client.executable"] == python
    path = conf["python.pythonpath"].split(":")
    assert path == [
        f"{DEFAULT_SETTINGS.app_root}/.venv/lib/python{DEFAULT_SETTINGS.python_version}"
        "/site-packages",
        f"{DEFAULT_SETTINGS.app_root}/feature_repo",
    ]


# --- the entry point and its configs ----------------------------------------------------------


def test_the_python_entry_args_name_exactly_the_generated_job_configs(
    rendered: dict[str, str], definitions: Definitions
) -> None:
    job = _deployment(rendered)["spec"]["job"]
    args: list[str] = job["args"]
    root = DEFAULT_SETTINGS.app_root
    # PythonDriver's own options come first, then the script and what it is given.
    script = args.index("-py") + 1
    assert args[script] == f"{root}/streaming/usp_job.py"
    assert set(args[:script]) >= {"-pyclientexec", "-pyexec"}
    options, configs = args[script + 1 : script + 9], args[script + 9 :]
    assert options == [
        "--repo",
        f"{root}/feature_repo",
        "--parallelism",
        str(job["parallelism"]),
        "--checkpoints",  # the bucket: the job's default folder is on the pod's own disk
        f"{DEFAULT_SETTINGS.checkpoint_dir}/{_job_name(definitions)}",
        "--flink-metrics-port",
        str(DEFAULT_SETTINGS.flink_metrics_port),
    ]
    # Each option is one streaming/usp_job.py takes (renaming one there must fail here).
    entry_point = (ROOT / "streaming" / "usp_job.py").read_text()
    for option in options[::2]:
        assert f'"{option}"' in entry_point, option
    # Every generated config, none other, in the order `usp run --all` runs them.
    assert configs == [f"{root}/streaming/{name}" for name in _run_all_order(definitions)]
    assert sorted(Path(c).name for c in configs) == sorted(render_job_configs(definitions))
    assert all((ROOT / "streaming" / Path(c).name).is_file() for c in configs)


def test_metrics_ports_and_the_job_name_match_what_the_job_exports(
    rendered: dict[str, str], definitions: Definitions
) -> None:
    spec = _deployment(rendered)["spec"]
    s = DEFAULT_SETTINGS
    assert spec["flinkConfiguration"]["metrics.reporter.prom.factory.class"] == (
        "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
    )
    assert spec["flinkConfiguration"]["metrics.reporter.prom.port"] == str(s.flink_metrics_port)
    assert _ports(spec["jobManager"]) == {FLINK_METRICS_PORT_NAME: s.flink_metrics_port}
    assert _ports(spec["taskManager"]) == {
        FLINK_METRICS_PORT_NAME: s.flink_metrics_port,
        USP_METRICS_PORT_NAME: s.usp_metrics_port,
    }
    # The job name streaming/usp_job.py gives the job, from the configs it is passed.
    configs = [
        parse_job_config((ROOT / "streaming" / n).read_text()) for n in _run_all_order(definitions)
    ]
    expected = job_name(job_part(c.kind, c.definition) for c in configs)
    # The TaskManagers run the Python steps: they serve the job's metrics, on every interface.
    settings = json.loads(_env(spec["taskManager"])["USP_JOB_METRICS"]["value"])
    assert settings == {"port": s.usp_metrics_port, "host": "0.0.0.0"}
    assert "USP_JOB_METRICS" not in _env(spec["jobManager"])
    for role in ("jobManager", "taskManager"):
        annotations = spec[role]["podTemplate"]["metadata"]["annotations"]
        assert annotations == {SCRAPE_ANNOTATION: "true", JOB_ANNOTATION: expected}


def test_every_variable_a_value_refers_to_is_defined_before_it(rendered: dict[str, str]) -> None:
    # Kubernetes expands $(VAR) only from variables defined earlier in the same list.
    spec = _deployment(rendered)["spec"]
    for role in ("jobManager", "taskManager"):
        seen: set[str] = set()
        for entry in _container(spec[role])["env"]:
            for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
                assert name in seen, f"{role}: {entry['name']} uses $({name}) before it is set"
            seen.add(entry["name"])


def test_the_scrape_config_finds_the_pods_and_labels_them_like_local_jobs(
    rendered: dict[str, str],
) -> None:
    (job,) = _yaml(rendered["prometheus-scrape.yml"])["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    assert job["honor_labels"] is True  # as monitoring/prometheus.yml: the jobs' `job` wins
    rules = job["relabel_configs"]

    def meta(annotation: str) -> str:
        return "__meta_kubernetes_pod_annotation_" + re.sub(r"[^a-zA-Z0-9_]", "_", annotation)

    keep = [r for r in rules if r.get("action") == "keep"]
    assert {"source_labels": [meta(SCRAPE_ANNOTATION)], "regex": "true", "action": "keep"} in keep
    (ports,) = [
        r for r in keep if r["source_labels"] == ["__meta_kubernetes_pod_container_port_name"]
    ]
    pattern = re.compile(ports["regex"])  # Prometheus anchors relabel regexes
    assert pattern.fullmatch(FLINK_METRICS_PORT_NAME) and pattern.fullmatch(USP_METRICS_PORT_NAME)
    (source,) = [r for r in rules if r.get("target_label") == "source"]
    assert "replacement" not in source  # Prometheus' default, $1: the regex's group
    assert re.fullmatch(source["regex"], FLINK_METRICS_PORT_NAME).group(1) == "flink"
    assert re.fullmatch(source["regex"], USP_METRICS_PORT_NAME).group(1) == "usp"
    (target,) = [r for r in rules if r.get("target_label") == "job"]
    assert target["source_labels"] == [meta(JOB_ANNOTATION)]


# --- secrets ----------------------------------------------------------------------------------

PLANTED = {
    "USP_REDIS_PASSWORD": "planted-redis-pw-7Q2x",
    "USP_KAFKA_SASL_USERNAME": "planted-kafka-user-3Kd9",
    "USP_KAFKA_SASL_PASSWORD": "planted-kafka-pw-Zw81",
    "USP_KAFKA_SSL_KEY_PASSWORD": "planted-key-pw-Lm40",
    "USP_REDIS_URL": "rediss://usp:planted-url-pw-Hh55@redis.prod.internal:6380",
    "USP_KAFKA_BOOTSTRAP": "planted-broker.prod.internal:9093",
    "USP_API_KEYS": "ranker=planted-api-key-0123456789:users.read",
}


def test_no_secret_value_lands_in_any_file_even_when_the_environment_holds_them(
    monkeypatch: pytest.MonkeyPatch, definitions: Definitions
) -> None:
    assert set(SECRET_VARIABLES) <= set(PLANTED)  # every variable connections calls secret
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    sasl = KubernetesSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN")
    for settings in (DEFAULT_SETTINGS, sasl):
        files = render_kubernetes(definitions, settings)
        assert files
        for name, text in files.items():
            for value in PLANTED.values():
                assert value not in text, f"{name} holds a value from the environment"
            assert "planted" not in text, name
        # Rendering ignores the environment: the same bytes without it.
        with monkeypatch.context() as clean:
            for name in PLANTED:
                clean.delenv(name)
            assert render_kubernetes(definitions, settings) == files


@pytest.mark.parametrize(
    ("settings", "optional"),
    [
        (DEFAULT_SETTINGS, True),
        (
            KubernetesSettings(
                kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512"
            ),
            False,
        ),
    ],
)
def test_credentials_are_secret_references_only(
    definitions: Definitions, settings: KubernetesSettings, optional: bool
) -> None:
    files = render_kubernetes(definitions, settings)
    spec = _deployment(files)["spec"]
    for role in ("jobManager", "taskManager"):
        env = _env(spec[role])
        for variable, key in SECRET_ENV.items():
            entry = env[variable]
            assert "value" not in entry, f"{role}: {variable} has a value"
            ref = entry["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (settings.secret, key)
            # The Redis password is always needed; the SASL login only with a SASL protocol.
            expected = optional and variable != "USP_REDIS_PASSWORD"
            assert ref.get("optional", False) is expected, variable
        for name, entry in env.items():
            if re.search("PASSWORD|SASL_USERNAME|SECRET|TOKEN", name):
                assert "secretKeyRef" in entry.get("valueFrom", {}), name
        # Endpoints come from the ConfigMap, not from values in this file.
        for variable in ("USP_KAFKA_BOOTSTRAP", "USP_REDIS_URL", "USP_KAFKA_SECURITY_PROTOCOL"):
            assert env[variable]["valueFrom"]["configMapKeyRef"]["name"] == settings.config_map
    config_map = _yaml(files["configmap.yaml"])["data"]
    assert not set(config_map) & set(SECRET_ENV)
    assert config_map["USP_KAFKA_SECURITY_PROTOCOL"] == settings.kafka_security_protocol
    assert config_map.get("USP_KAFKA_SASL_MECHANISM") == settings.kafka_sasl_mechanism
    # The Secret template has the keys, never values, and is not applied by kustomize.
    secret = _yaml(files["secret.template.yaml"])
    assert secret["metadata"]["name"] == settings.secret
    assert secret["stringData"] == {key: "" for key in SECRET_ENV.values()}
    assert "secret.template.yaml" not in _yaml(files["kustomization.yaml"])["resources"]


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"parallelism": 0}, "parallelism 0"),
        ({"standby_taskmanagers": -1}, "standby_taskmanagers -1"),
        ({"checkpoint_dir": "file:///tmp/checkpoints"}, "checkpoint_dir"),
        ({"ha_dir": "/flink/ha"}, "ha_dir"),
        ({"name": "USP_signals"}, "name 'USP_signals'"),
        ({"kafka_security_protocol": "SASL_SSL"}, "kafka_sasl_mechanism must be set"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "kafka_sasl_mechanism must be set"),
        ({"kafka_security_protocol": "TLS"}, "kafka_security_protocol 'TLS'"),
        ({"redis_url": "redis://:hunter2-pw@redis:6379"}, "without a password"),
        ({"usp_metrics_port": 9249}, "must differ"),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(
    definitions: Definitions, change: dict[str, Any], named: str
) -> None:
    with pytest.raises(KubernetesError) as refused:
        render_kubernetes(definitions, KubernetesSettings(**change))
    assert named in str(refused.value)
    assert "hunter2" not in str(refused.value)  # a password given by mistake is not echoed


def test_generate_check_covers_the_deployment_and_generate_fixes_it(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("data")
    )
    shutil.copytree(ROOT / "validation", tmp_path / "validation")
    args = ["--repo", str(tmp_path / "feature_repo")]
    runner = CliRunner()
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    deploy = tmp_path / "deploy" / "kubernetes"
    assert sorted(p.name for p in deploy.iterdir()) == sorted(p.name for p in DEPLOY.iterdir())
    assert runner.invoke(main, ["generate", "--check", *args]).exit_code == 0

    # A hand edit is stale, and generate puts it back.
    manifest = deploy / "flinkdeployment.yaml"
    manifest.write_text(manifest.read_text().replace("redundant-taskmanager-num: '1'", "x: '0'"))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1 and "deploy/kubernetes/flinkdeployment.yaml" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert manifest.read_text() == (DEPLOY / "flinkdeployment.yaml").read_text()

    # A new definition adds its config to the job's arguments.
    session = tmp_path / "feature_repo" / "sessions" / "views_10m.yaml"
    session.write_text(session.read_text().replace("name: views_10m", "name: views_recent"))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1 and "deploy/kubernetes/flinkdeployment.yaml" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert "streaming/session_views_recent.json" in manifest.read_text()


def test_docstring_examples_pass() -> None:
    result = doctest.testmod(kubernetes, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
