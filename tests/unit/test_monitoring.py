"""Generated monitoring: golden files, PromQL that parses, only contract metrics, valid rules.

The Flink files (``prometheus/flink.rules.yml``, ``grafana/flink.json``) are checked the same
way against Flink's table (``metric_names.FLINK_METRICS``), and where promtool is installed its
``test rules`` replays scenarios against their alerts.
"""

from __future__ import annotations

import doctest
import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import promql_parser
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from usp_feast import metric_names, monitoring
from usp_feast.cli import main
from usp_feast.definitions import Definitions, load_definitions
from usp_feast.job_metrics import LATENCY_BUCKETS
from usp_feast.jobs import parse_job_config, render_job_configs
from usp_feast.metric_names import (
    FLINK_METRICS,
    INGESTION_LATENCY,
    METRICS,
    contract,
    flink_metric,
    flink_series,
    job_name,
    job_part,
    series_for_kind,
)
from usp_feast.monitoring import (
    DEFAULT_THRESHOLDS,
    FLINK_STEM,
    TARGETS_FILE,
    MonitoringError,
    Pipeline,
    pipelines,
    render_monitoring,
)
from usp_feast.monitoring_checks import (
    PROMETHEUS_SERIES,
    check_dashboard,
    check_rules,
    dashboard_expressions,
    expression_metrics,
    parse_expression,
    referenced_metrics,
    rule_expressions,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "booking": "signal",
    "search": "signal",
    "view": "signal",
    "wishlist": "signal",
    "wishlist_enriched": "join",
    "active_trip_planner": "segment",
    "browse_session": "session",
    "views_10m": "session",
}
FLINK_RULES = f"prometheus/{FLINK_STEM}.rules.yml"
FLINK_DASHBOARD = f"grafana/{FLINK_STEM}.json"
FLINK_ALERTS = {
    "UspFlinkJobRestarting",
    "UspFlinkCheckpointsFailing",
    "UspFlinkCheckpointSlow",
    "UspFlinkBackpressure",
}


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions(ROOT / "feature_repo")


@pytest.fixture(scope="module")
def rendered(definitions: Definitions) -> dict[str, str]:
    return render_monitoring(definitions)


def _yaml(text: str):
    return YAML(typ="safe", pure=True).load(text)


def test_the_example_repo_s_monitoring_matches_the_checked_in_folder(
    rendered: dict[str, str],
) -> None:
    on_disk = {
        path.relative_to(ROOT / "monitoring").as_posix()
        for path in (ROOT / "monitoring").rglob("*")
        if path.is_file()
    }
    assert on_disk == set(rendered), "monitoring/ holds other files than `usp generate` writes"
    for name, text in rendered.items():
        assert (ROOT / "monitoring" / name).read_text() == text, f"monitoring/{name} is stale"


def test_generate_check_passes_on_the_example_repo() -> None:
    # CI runs this: `usp generate --check` over streaming/, backfill/ and monitoring/.
    result = CliRunner().invoke(main, ["generate", "--check", "--repo", str(ROOT / "feature_repo")])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output


def test_one_rules_file_and_one_dashboard_per_definition_and_one_for_flink(
    rendered: dict[str, str],
) -> None:
    assert sorted(rendered) == sorted(
        [
            "README.md",
            "prometheus.yml",
            *(f"prometheus/{name}.rules.yml" for name in KINDS),
            *(f"grafana/{name}.json" for name in KINDS),
            FLINK_RULES,
            FLINK_DASHBOARD,
        ]
    )


def test_rendering_is_deterministic(definitions: Definitions, rendered: dict[str, str]) -> None:
    again = render_monitoring(load_definitions(ROOT / "feature_repo"))
    assert again == rendered
    assert list(again) == list(rendered)  # the same order too


def test_generate_check_fails_on_a_changed_definition_and_generate_fixes_it(
    tmp_path: Path,
) -> None:
    shutil.copytree(
        ROOT / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("data")
    )
    shutil.copytree(ROOT / "validation", tmp_path / "validation")
    args = ["--repo", str(tmp_path / "feature_repo"), "--streaming", str(tmp_path / "streaming")]
    runner = CliRunner()
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert runner.invoke(main, ["generate", "--check", *args]).exit_code == 0
    monitoring_dir = tmp_path / "monitoring"
    assert (monitoring_dir / "grafana" / "views_10m.json").is_file()

    # A renamed session engagement needs new rules, a new dashboard and a new prometheus.yml.
    session = tmp_path / "feature_repo" / "sessions" / "views_10m.yaml"
    session.write_text(session.read_text().replace("name: views_10m", "name: views_recent"))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1
    assert "monitoring/prometheus/views_recent.rules.yml" in stale.output
    assert "monitoring/grafana/views_recent.json" in stale.output
    assert "monitoring/prometheus.yml" in stale.output and "usp generate" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert runner.invoke(main, ["generate", "--check", *args]).exit_code == 0
    assert "prometheus/views_recent.rules.yml" in (monitoring_dir / "prometheus.yml").read_text()

    # A hand edit of a generated file is stale too, and generate puts it back.
    rules = monitoring_dir / "prometheus" / "search.rules.yml"
    rules.write_text(rules.read_text().replace("> 1\n", "> 3\n"))
    stale = runner.invoke(main, ["generate", "--check", *args])
    assert stale.exit_code == 1 and "monitoring/prometheus/search.rules.yml" in stale.output
    assert runner.invoke(main, ["generate", *args]).exit_code == 0
    assert (
        rules.read_text()
        == render_monitoring(load_definitions(session.parents[1]))["prometheus/search.rules.yml"]
    )


@pytest.mark.parametrize("name", sorted(KINDS))
def test_rules_files_pass_check_rules(rendered: dict[str, str], name: str) -> None:
    assert check_rules(rendered[f"prometheus/{name}.rules.yml"]) == []


@pytest.mark.parametrize("name", sorted(KINDS))
def test_dashboards_pass_check_dashboard(rendered: dict[str, str], name: str) -> None:
    assert check_dashboard(rendered[f"grafana/{name}.json"]) == []


def test_every_expression_parses_as_promql(rendered: dict[str, str]) -> None:
    expressions = [
        *(e for n, t in rendered.items() if n.endswith(".rules.yml") for e in rule_expressions(t)),
        *(e for n, t in rendered.items() if n.endswith(".json") for e in dashboard_expressions(t)),
    ]
    assert len(expressions) > 100
    for expr in expressions:
        parse_expression(expr)  # raises on anything Prometheus would reject


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_referenced_metric_is_in_the_contract_for_its_kind(
    rendered: dict[str, str], name: str
) -> None:
    kind = KINDS[name]
    allowed = series_for_kind(kind) | PROMETHEUS_SERIES
    rules = referenced_metrics(rendered[f"prometheus/{name}.rules.yml"])
    dashboard = referenced_metrics(rendered[f"grafana/{name}.json"])
    assert rules <= allowed, rules - allowed
    assert dashboard <= allowed, dashboard - allowed
    # And every metric of the contract for the kind is shown on the dashboard.
    shown = {
        m.name
        for m in METRICS
        if kind in m.kinds and any(s in dashboard for s in metric_names.series_names(m))
    }
    assert shown == set(metric_names.metrics_for_kind(kind))
    assert "up" in rules and "up" in dashboard
    ingestion = f"{INGESTION_LATENCY}_bucket"
    assert (ingestion in rules | dashboard) == (kind in ("signal", "join"))


def test_referenced_metrics_leaves_out_what_a_rules_file_records() -> None:
    text = (
        "groups:\n  - name: g\n    rules:\n"
        "      - record: job:a:rate5m\n        expr: sum(rate(a_total[5m]))\n"
        "      - alert: A\n        expr: job:a:rate5m > 1 and on() up == 1\n"
    )
    assert referenced_metrics(text) == {"a_total", "up"}
    assert expression_metrics('{__name__="b", x="1"} + c offset 5m') == {"b", "c"}
    with pytest.raises(ValueError, match="pattern on __name__"):
        expression_metrics('{__name__=~"usp_.*"}')


def test_dashboards_have_the_panels_of_their_kind(rendered: dict[str, str]) -> None:
    def titles(name: str) -> list[str]:
        dashboard = json.loads(rendered[f"grafana/{name}.json"])
        return [p["title"] for p in dashboard["panels"] if p["type"] != "row"]

    latencies = ["Event latency", "Ingestion latency", "Transform latency", "Job latency"]
    common_tail = ["Consumer lag (records)", "Checkpoint age", "Job metrics endpoint up"]
    for name in ("search", "wishlist_enriched"):
        assert titles(name) == [
            *(f"{t} (p50, p99)" for t in latencies),
            "Throughput (events/s)",
            "Dead letters (/s)",
            "Dead letters (ratio of events read)",
            *common_tail,
        ]
    for name in ("active_trip_planner", "browse_session", "views_10m"):
        assert titles(name) == [
            *(f"{t} (p50, p99)" for t in latencies if t != "Ingestion latency"),
            "Throughput (events/s)",
            "Late events set aside (/s)",
            "Late events set aside (ratio of events read)",
            *common_tail,
        ]


def test_a_dashboard_is_importable_as_written(rendered: dict[str, str]) -> None:
    dashboard = json.loads(rendered["grafana/search.json"])
    assert (dashboard["uid"], dashboard["title"]) == ("usp-signal-search", "usp · signal · search")
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["id"] is None
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            # Rates follow the dashboard's resolution, as Grafana recommends.
            assert "[" not in target["expr"] or "[$__rate_interval]" in target["expr"]
    # Panels never overlap on Grafana's 24-column grid.
    cells = [
        (x, y)
        for p in panels
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24
    job_latency = next(p for p in panels if p["title"].startswith("Job latency"))
    steps = job_latency["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == DEFAULT_THRESHOLDS.job_latency_p99_seconds


def test_a_long_name_still_gets_a_stable_valid_uid() -> None:
    name = "a" * 60
    text = monitoring._dashboard_file(Pipeline(name, "session", name), DEFAULT_THRESHOLDS)
    uid = json.loads(text)["uid"]
    assert len(uid) <= 40 and uid.startswith("usp-session-aaa")
    assert (
        uid
        == json.loads(
            monitoring._dashboard_file(Pipeline(name, "session", name), DEFAULT_THRESHOLDS)
        )["uid"]
    )
    assert check_dashboard(text) == []


def _alerts(text: str) -> dict[str, dict]:
    return {
        rule["alert"]: rule
        for group in _yaml(text)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_alerts_fire_on_the_documented_thresholds(rendered: dict[str, str]) -> None:
    alerts = _alerts(rendered["prometheus/search.rules.yml"])
    assert {name: rule["for"] for name, rule in alerts.items()} == {
        "UspJobLatencyHigh": "5m",
        "UspDeadLetterRatioHigh": "10m",
        "UspConsumerLagHigh": "10m",
        "UspConsumerLagGrowing": "10m",
        "UspPipelineStalled": "1m",
        "UspCheckpointStale": "1m",
        "UspJobDown": "1m",
    }
    latency = alerts["UspJobLatencyHigh"]["expr"]
    assert latency.startswith("histogram_quantile(0.99, ") and latency.endswith(" > 1")
    assert "usp_job_latency_seconds_bucket" in latency
    assert alerts["UspDeadLetterRatioHigh"]["expr"].endswith(" > 0.05")
    assert alerts["UspConsumerLagHigh"]["expr"].endswith(" > 10000")
    assert "[15m]" in alerts["UspPipelineStalled"]["expr"]
    assert alerts["UspCheckpointStale"]["expr"].endswith(" > 600")
    assert alerts["UspJobDown"]["expr"].startswith("up{") and alerts["UspJobDown"]["expr"].endswith(
        " == 0"
    )
    for rule in alerts.values():
        assert rule["labels"]["pipeline"] == "search" and rule["labels"]["kind"] == "signal"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_thresholds_come_from_one_dataclass(definitions: Definitions) -> None:
    stricter = monitoring.AlertThresholds(
        job_latency_p99_seconds=0.25, checkpoint_age=DEFAULT_THRESHOLDS.checkpoint_age * 3
    )
    alerts = _alerts(render_monitoring(definitions, stricter)["prometheus/view.rules.yml"])
    assert alerts["UspJobLatencyHigh"]["expr"].endswith(" > 0.25")
    assert alerts["UspCheckpointStale"]["expr"].endswith(" > 1800")


def test_check_rules_reports_every_problem() -> None:
    text = """
groups:
  - name: g
    rules:
      - alert: Same
        expr: up == 0
        for: 5 minutes
        labels: {severity: 1, bad-name: x}
      - alert: Same
        expr: rate(x[5m]
      - record: not a name
        expr: sum(x)
        for: 1m
      - alert: A
        record: b
        expr: x
      - alert: NoExpr
  - name: g
    rules: []
extra: 1
"""
    problems = check_rules(text)
    assert "unknown top-level key 'extra'" in problems
    assert any("'5 minutes' is not a Prometheus duration" in p for p in problems)
    assert any("severity: the value must be a string" in p for p in problems)
    assert any("'bad-name' is not a valid label name" in p for p in problems)
    assert any("alert 'Same'): alert name also used in group 'g'" in p for p in problems)
    assert any("expr: unclosed left parenthesis" in p for p in problems)
    assert any("record must be a valid metric name" in p for p in problems)
    assert any("unknown key 'for'" in p for p in problems)
    assert any("exactly one of 'alert' and 'record'" in p for p in problems)
    assert any("(alert 'NoExpr'): expr is missing" in p for p in problems)
    assert any("the group name is used twice" in p for p in problems)
    assert any("rules must be a non-empty list" in p for p in problems)
    assert check_rules("groups: [") == [check_rules("groups: [")[0]]
    assert check_rules("groups: [")[0].startswith("not valid YAML")
    assert check_rules("[]") == ["expected a mapping with a list of groups under 'groups'"]


def test_check_dashboard_reports_a_bad_query_and_a_missing_variable(
    rendered: dict[str, str],
) -> None:
    dashboard = json.loads(rendered["grafana/view.json"])
    dashboard["templating"]["list"] = []
    dashboard["panels"][1]["targets"][0]["expr"] = "rate(usp_events_read_total[5m]"
    dashboard["panels"][2]["id"] = dashboard["panels"][1]["id"]
    problems = check_dashboard(json.dumps(dashboard))
    assert "no $datasource variable of type datasource" in problems
    assert any("query A: invalid PromQL" in p for p in problems)
    assert any("id must be a unique integer" in p for p in problems)


def test_prometheus_config_loads_every_rule_file_and_scrapes_the_jobs_targets_file(
    rendered: dict[str, str],
) -> None:
    config = _yaml(rendered["prometheus.yml"])
    assert config["rule_files"] == [*(f"prometheus/{p}.rules.yml" for p in KINDS), FLINK_RULES]
    assert all(path in rendered for path in config["rule_files"])
    (scrape,) = config["scrape_configs"]
    assert scrape["honor_labels"] is True  # the jobs' own `job` label wins
    (discovery,) = scrape["file_sd_configs"]
    # Prometheus resolves it against the config file's folder: monitoring/ in the project root.
    (targets,) = discovery["files"]
    assert (ROOT / "monitoring" / targets).resolve() == (ROOT / TARGETS_FILE).resolve()
    relabel = scrape["relabel_configs"][0]
    assert (relabel["source_labels"], relabel["target_label"]) == (["usp_job"], "job")


def _job_regex(expr: str) -> str:
    """The regex of the ``job=~`` matcher in ``up{job=~"..."} == 0``."""
    found: list[str] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.extend(m.value for m in node.matchers.matchers if m.name == "job")
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    (regex,) = found
    return regex


def test_job_level_alerts_match_every_job_running_the_pipeline(rendered: dict[str, str]) -> None:
    down = _job_regex(_alerts(rendered["prometheus/search.rules.yml"])["UspJobDown"]["expr"])
    for job in ("search", "search+view", "view+search", "booking+search+view"):
        assert re.fullmatch(down, job), job
    for job in ("view", "search_x", "xsearch", "view+search_2", "segment_search"):
        assert not re.fullmatch(down, job), job
    join = _alerts(rendered["prometheus/wishlist_enriched.rules.yml"])["UspCheckpointStale"]
    assert re.fullmatch(_job_regex(join["expr"]), "search+join_wishlist_enriched")
    assert not re.fullmatch(_job_regex(join["expr"]), "wishlist_enriched")


def test_job_parts_are_the_names_the_job_configs_run_under(definitions: Definitions) -> None:
    # streaming/usp_job.py names a job after its configs; the alerts look for these parts.
    for file_name, text in render_job_configs(definitions).items():
        config = parse_job_config(text)
        definition = getattr(config, config.kind)  # signal, join, segment or session: its name
        assert job_part(config.kind, definition) == file_name.removesuffix(".json")
    assert job_name(["search", "join_wishlist_enriched"]) == "search+join_wishlist_enriched"


def test_a_segment_named_like_a_signal_gets_files_of_its_own(
    definitions: Definitions,
) -> None:
    segment = definitions.segment("active_trip_planner").model_copy(update={"name": "search"})
    clashing = Definitions(
        repo=definitions.repo, signals=definitions.signals, segments=(segment,), sessions=()
    )
    found = {(p.kind, p.name): p.stem for p in pipelines(clashing)}
    assert found[("signal", "search")] == "search"
    assert found[("segment", "search")] == "segment_search"
    files = render_monitoring(clashing)
    assert 'kind="segment"' in files["prometheus/segment_search.rules.yml"]
    assert json.loads(files["grafana/segment_search.json"])["uid"] == "usp-segment-search"


def test_the_flink_table_is_consistent_and_apart_from_the_contract() -> None:
    names = [m.name for m in FLINK_METRICS]
    assert len(names) == len(set(names)) == 10
    assert flink_series() == set(names)
    assert not flink_series() & {s for m in METRICS for s in metric_names.series_names(m)}
    for metric in FLINK_METRICS:
        assert metric.name.startswith("flink_") and metric.help.endswith(".")
        assert (metric.type, metric.source) == ("gauge", "flink")
        assert "job_name" in metric.labels and "job_id" in metric.labels
        assert flink_metric(metric.name) is metric
    # Labels as a live job's reporter exposes them (tests/e2e scrape one).
    assert flink_metric(metric_names.FLINK_RESTARTS).labels == ("job_id", "host", "job_name")
    assert {"task_name", "subtask_index"} <= set(
        flink_metric(metric_names.FLINK_BACKPRESSURED_TIME).labels
    )
    with pytest.raises(KeyError, match="not among the Flink series"):
        flink_metric("flink_jobmanager_job_nothing")


def test_the_metric_contract_is_consistent() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names)) == 9
    for metric in METRICS:
        assert set(metric.kinds) <= set(metric_names.KINDS)
        assert metric.help.endswith(".")
        if metric.type == "counter":
            assert metric.name.endswith("_total")
        if metric.type == "histogram":
            assert metric.name.endswith("_seconds")
        assert metric_names.HELP[metric.name] == metric.help
    assert contract(INGESTION_LATENCY).kinds == ("signal", "join")
    assert metric_names.INGESTION_KINDS == {"signal", "join"}
    assert contract(metric_names.LAST_CHECKPOINT).labels == ("job",)
    assert contract(metric_names.CONSUMER_LAG).labels == ("job", "pipeline", "kind", "topic")
    with pytest.raises(KeyError, match="not in the metric contract"):
        contract("usp_nothing_total")


@pytest.mark.parametrize("module", [metric_names, monitoring])
def test_docstring_examples_pass(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0


def test_the_latency_threshold_is_a_bucket_bound_of_the_exporter() -> None:
    # Otherwise histogram_quantile interpolates inside a bucket exactly where the alert decides.
    assert DEFAULT_THRESHOLDS.job_latency_p99_seconds in LATENCY_BUCKETS


def test_the_docs_describe_every_metric_and_alert(rendered: dict[str, str]) -> None:
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    listed = [(m.name, m.type) for m in METRICS] + [(m.name, m.type) for m in FLINK_METRICS]
    for name, type_ in listed:
        assert f"| `{name}` | {type_} |" in docs, name
    alerts = {**_alerts(rendered["prometheus/search.rules.yml"]), **_alerts(rendered[FLINK_RULES])}
    for alert in alerts:
        assert f"| {alert} |" in docs and f"| {alert} |" in rendered["README.md"], alert


def test_promtool_accepts_the_rules_and_the_config(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    assert shutil.which("promtool"), "promtool is missing: scripts/setup.sh installs prometheus"
    for name, text in rendered.items():
        (tmp_path / "monitoring" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "monitoring" / name).write_text(text)
    (tmp_path / TARGETS_FILE).parent.mkdir(parents=True)
    (tmp_path / TARGETS_FILE).write_text('[{"targets": ["127.0.0.1:9"], "labels": {}}]')
    folder = tmp_path / "monitoring"
    rules = sorted(str(p.relative_to(folder)) for p in folder.glob("prometheus/*.rules.yml"))
    for command in (["check", "rules", *rules], ["check", "config", "prometheus.yml"]):
        result = subprocess.run(
            ["promtool", *command], cwd=folder, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- Flink -------------------------------------------------------------------------------------


def test_the_flink_files_pass_the_checks(rendered: dict[str, str]) -> None:
    assert check_rules(rendered[FLINK_RULES]) == []
    assert check_dashboard(rendered[FLINK_DASHBOARD]) == []
    expressions = rule_expressions(rendered[FLINK_RULES]) + dashboard_expressions(
        rendered[FLINK_DASHBOARD]
    )
    assert len(expressions) == 4 + 10
    for expr in expressions:
        parse_expression(expr)


def test_the_flink_files_render_the_same_whatever_the_definitions(
    definitions: Definitions, rendered: dict[str, str]
) -> None:
    # Once per repository: no definition changes them, and an empty repository has them too.
    empty = render_monitoring(Definitions(repo=definitions.repo, signals=()))
    assert (
        empty[FLINK_RULES] == rendered[FLINK_RULES] == render_monitoring(definitions)[FLINK_RULES]
    )
    assert empty[FLINK_DASHBOARD] == rendered[FLINK_DASHBOARD]
    assert _yaml(empty["prometheus.yml"])["rule_files"] == [FLINK_RULES]


def test_the_flink_files_query_only_flink_s_table(rendered: dict[str, str]) -> None:
    allowed = flink_series() | PROMETHEUS_SERIES
    rules = referenced_metrics(rendered[FLINK_RULES])
    dashboard = referenced_metrics(rendered[FLINK_DASHBOARD])
    assert rules <= allowed, rules - allowed
    assert dashboard <= allowed, dashboard - allowed
    # The table lists nothing the files do not use, and the definitions' files use none of it.
    assert rules | dashboard == flink_series()
    for name in KINDS:
        assert not referenced_metrics(rendered[f"prometheus/{name}.rules.yml"]) & flink_series()
        assert not referenced_metrics(rendered[f"grafana/{name}.json"]) & flink_series()


def test_flink_alerts_fire_on_the_documented_thresholds(rendered: dict[str, str]) -> None:
    alerts = _alerts(rendered[FLINK_RULES])
    assert set(alerts) == FLINK_ALERTS
    assert {name: rule.get("for") for name, rule in alerts.items()} == {
        "UspFlinkJobRestarting": None,  # fires at once; the 10m window keeps it up
        "UspFlinkCheckpointsFailing": None,
        "UspFlinkCheckpointSlow": "10m",
        "UspFlinkBackpressure": "10m",
    }
    restarting = alerts["UspFlinkJobRestarting"]["expr"]
    assert "delta(flink_jobmanager_job_numRestarts[10m])" in restarting
    assert restarting.endswith(" > 0")
    failing = alerts["UspFlinkCheckpointsFailing"]["expr"]
    assert "delta(flink_jobmanager_job_numberOfFailedCheckpoints[10m])) > 0" in failing
    assert failing.endswith("(flink_jobmanager_job_uptime) > 720000")  # 10m window + 2m grace
    assert alerts["UspFlinkCheckpointSlow"]["expr"] == (
        "max by (job, job_name) (flink_jobmanager_job_lastCheckpointDuration) / 1000 > 60"
    )
    assert alerts["UspFlinkBackpressure"]["expr"] == (
        "max by (job, job_name, task_name) "
        "(flink_taskmanager_job_task_backPressuredTimeMsPerSecond) > 500"
    )
    for rule in alerts.values():
        assert rule["labels"]["source"] == "flink"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert "{{ $labels.job }}" in rule["annotations"]["description"]


def test_flink_thresholds_come_from_the_dataclass(definitions: Definitions) -> None:
    stricter = monitoring.AlertThresholds(
        flink_restart_window=timedelta(minutes=30),
        flink_startup_grace=timedelta(minutes=5),
        flink_checkpoint_duration=timedelta(seconds=90),
        flink_backpressure_ms_per_second=250,
        flink_backpressure_for=timedelta(minutes=3),
    )
    files = render_monitoring(definitions, stricter)
    alerts = _alerts(files[FLINK_RULES])
    assert "numRestarts[30m]" in alerts["UspFlinkJobRestarting"]["expr"]
    assert alerts["UspFlinkCheckpointsFailing"]["expr"].endswith(" > 900000")
    assert alerts["UspFlinkCheckpointSlow"]["expr"].endswith(" > 90")
    assert alerts["UspFlinkBackpressure"]["expr"].endswith(" > 250")
    assert alerts["UspFlinkBackpressure"]["for"] == "3m"
    panels = json.loads(files[FLINK_DASHBOARD])["panels"]
    backpressure = next(p for p in panels if p["title"].startswith("Backpressure"))
    assert backpressure["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 250
    assert (
        "| UspFlinkBackpressure | a task back-pressured > 250 ms/s, for 3m |" in files["README.md"]
    )


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(parse_expression(expr), visit)
    return found


def test_the_flink_dashboard_picks_jobs_and_shows_every_panel(rendered: dict[str, str]) -> None:
    dashboard = json.loads(rendered[FLINK_DASHBOARD])
    assert (dashboard["uid"], dashboard["tags"]) == ("usp-flink", ["usp", "flink"])
    datasource, job = dashboard["templating"]["list"]
    assert (datasource["name"], datasource["type"]) == ("datasource", "datasource")
    assert (job["name"], job["type"], job["multi"], job["includeAll"]) == (
        "job_name",
        "query",
        True,
        True,
    )
    picked = re.fullmatch(r"label_values\((\w+), job_name\)", job["query"]["query"])
    assert picked and picked.group(1) in flink_series(), job["query"]
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    assert titles == [
        "Restarts",
        "Uptime",
        "Checkpoint duration",
        "Checkpoint size",
        "Checkpoints completed and failed",
        "Checkpoint age",
        "Backpressure per task (ms/s)",
        "Busy time per task (ms/s)",
        "Records in per task (/s)",
    ]
    for expr in dashboard_expressions(rendered[FLINK_DASHBOARD]):
        assert "[" not in expr or "[$__rate_interval]" in expr, expr
        for selector in _selectors(expr):  # every query follows the job picker
            matchers = {(m.name, m.value) for m in selector.matchers.matchers}
            assert ("job_name", "$job_name") in matchers, expr
    per_task = [p for p in dashboard["panels"] if p["title"].endswith("per task (ms/s)")]
    assert all("task_name" in p["targets"][0]["expr"] for p in per_task)
    duration = next(p for p in dashboard["panels"] if p["title"] == "Checkpoint duration")
    assert duration["fieldConfig"]["defaults"]["unit"] == "ms"  # Flink reports milliseconds
    assert duration["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 60_000


def test_every_definition_s_dashboard_links_to_the_flink_dashboard(
    rendered: dict[str, str],
) -> None:
    flink_tags = set(json.loads(rendered[FLINK_DASHBOARD])["tags"])
    for name in KINDS:
        (link,) = json.loads(rendered[f"grafana/{name}.json"])["links"]
        assert link["type"] == "dashboards" and link["includeVars"] and link["keepTime"]
        # Grafana lists the dashboards having every tag of the link: the Flink one alone.
        tagged = [
            path
            for path, text in rendered.items()
            if path.startswith("grafana/") and set(link["tags"]) <= set(json.loads(text)["tags"])
        ]
        assert tagged == [FLINK_DASHBOARD] and set(link["tags"]) == flink_tags


def test_a_definition_named_flink_gets_its_kind_as_prefix(definitions: Definitions) -> None:
    signal = definitions.signal("search").model_copy(update={"name": "flink"})
    segment = definitions.segment("active_trip_planner").model_copy(update={"name": "flink"})
    named_flink = Definitions(repo=definitions.repo, signals=(signal,), segments=(segment,))
    found = {(p.kind, p.name): p.stem for p in pipelines(named_flink)}
    assert found == {("signal", "flink"): "signal_flink", ("segment", "flink"): "segment_flink"}
    files = render_monitoring(named_flink)
    assert files[FLINK_RULES] == render_monitoring(definitions)[FLINK_RULES]
    assert 'pipeline="flink",kind="signal"' in files["prometheus/signal_flink.rules.yml"]
    assert json.loads(files["grafana/segment_flink.json"])["uid"] == "usp-segment-flink"
    assert _yaml(files["prometheus.yml"])["rule_files"] == [
        "prometheus/signal_flink.rules.yml",
        "prometheus/segment_flink.rules.yml",
        FLINK_RULES,
    ]
    # The prefix may itself be taken: then both definitions are named, not one file lost.
    other = definitions.signal("view").model_copy(update={"name": "signal_flink"})
    clashing = Definitions(repo=definitions.repo, signals=(signal, other))
    with pytest.raises(MonitoringError, match="'flink' and signal 'signal_flink' would both"):
        pipelines(clashing)


# promtool's `test rules` evaluates the alerts over series given minute by minute ("a x n" is
# a held n more minutes, "a+b x n" a rising by b a minute). The job starts at minute 0; the
# values mimic a real job's reporter:
#
#   minute                0    1 ... 4    5 ... 19   20 ... 30
#   uptime (ms)           0  60000 ...                    1800000
#   failed checkpoints    0   18 ...           18    19 ... 19   startup failures, one real one
#   restarts              0    0 ...            0     1 ...  1
#   checkpoint (ms)       9    9 ... 9  70000 ...            ... slow from minute 5
#   backpressure (ms/s)   sink: 800 and 100 (two subtasks), source: 400, all along
#
_JOB = {"job": "search", "job_name": "usp:_search"}
_FLINK_SERIES = [
    (metric_names.FLINK_UPTIME, {"job_id": "a"}, "0+60000x30"),
    (metric_names.FLINK_FAILED_CHECKPOINTS, {"job_id": "a"}, "0 18x18 19x10"),
    (metric_names.FLINK_RESTARTS, {"job_id": "a"}, "0x19 1x10"),
    (metric_names.FLINK_CHECKPOINT_DURATION, {"job_id": "a"}, "9x4 70000x25"),
    (metric_names.FLINK_BACKPRESSURED_TIME, {"task_name": "sink", "subtask_index": "0"}, "800x30"),
    (metric_names.FLINK_BACKPRESSURED_TIME, {"task_name": "sink", "subtask_index": "1"}, "100x30"),
    (
        metric_names.FLINK_BACKPRESSURED_TIME,
        {"task_name": "source", "subtask_index": "0"},
        "400x30",
    ),
]
# alert → [(minute, fires?)]
_FLINK_SCENARIO = {
    # Startup failures never fire: not at 2m, nor at 10m when they are still in the window.
    "UspFlinkCheckpointsFailing": [(2, False), (10, False), (19, False), (21, True), (29, True)],
    "UspFlinkJobRestarting": [(19, False), (20, True), (29, True), (31, False)],
    # Slow from minute 5: pending for 10m, firing from minute 15.
    "UspFlinkCheckpointSlow": [(4, False), (14, False), (16, True)],
    # The busiest subtask counts; the task at 400 ms/s stays below 500.
    "UspFlinkBackpressure": [(9, False), (11, True)],
}
_FLINK_LABELS = {
    "UspFlinkCheckpointsFailing": {"severity": "warning"},
    "UspFlinkJobRestarting": {"severity": "critical"},
    "UspFlinkCheckpointSlow": {"severity": "warning"},
    "UspFlinkBackpressure": {"severity": "warning", "task_name": "sink"},
}
# How each description shows its value (70000 ms of checkpoint: the rule reads seconds).
_FLINK_VALUES = {
    "{{ $value | humanizeDuration }}": "1m 10s",
    "{{ $value | humanize }}": "800",
    "{{ $labels.job }}": "search",
    "{{ $labels.task_name }}": "sink",
}


def _series(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in {**_JOB, **labels}.items()) + "}"


def test_promtool_replays_the_flink_alerts_over_a_job_s_life(
    rendered: dict[str, str], tmp_path: Path
) -> None:
    assert shutil.which("promtool"), "promtool is missing: scripts/setup.sh installs prometheus"
    alerts = _alerts(rendered[FLINK_RULES])
    cases = []
    for alert, timeline in _FLINK_SCENARIO.items():
        # promtool compares the annotations too, with their templates expanded.
        annotations = dict(alerts[alert]["annotations"])
        for key, text in annotations.items():
            for template, value in _FLINK_VALUES.items():
                text = text.replace(template, value)
            annotations[key] = text
        labels = {**_JOB, "source": "flink", **_FLINK_LABELS[alert]}
        for minute, fires in timeline:
            expected = [{"exp_labels": labels, "exp_annotations": annotations}] if fires else []
            cases.append({"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": expected})
    test = {
        "rule_files": ["flink.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": _series(metric, labels), "values": values}
                    for metric, labels, values in _FLINK_SERIES
                ],
                "alert_rule_test": cases,
            }
        ],
    }
    (tmp_path / "flink.test.yml").write_text(json.dumps(test, indent=1))  # JSON is YAML
    (tmp_path / "flink.rules.yml").write_text(rendered[FLINK_RULES])
    result = subprocess.run(
        ["promtool", "test", "rules", "flink.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
