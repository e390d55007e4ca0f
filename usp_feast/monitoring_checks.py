"""Checks of generated monitoring files: what promtool would find, and what they query.

:func:`check_rules` and :func:`check_dashboard` list every problem of a rules file or a Grafana
dashboard; :func:`referenced_metrics` names every series one queries, so tests can hold them
against the metric contract and against what a running job exports. PromQL is parsed with
``promql-parser``, the Python binding of the Rust parser Prometheus-compatible databases use.

Example:
    >>> sorted(referenced_metrics('''
    ... groups:
    ...   - name: g
    ...     rules:
    ...       - record: pipeline:x:rate5m
    ...         expr: sum(rate(usp_events_read_total[5m]))
    ...       - alert: Down
    ...         expr: up == 0 or pipeline:x:rate5m == 0
    ... '''))
    ['up', 'usp_events_read_total']

"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from usp_feast.monitoring import DATASOURCE

if TYPE_CHECKING:
    import promql_parser

__all__ = [
    "PROMETHEUS_SERIES",
    "PromQLError",
    "check_dashboard",
    "check_rules",
    "dashboard_expressions",
    "expression_metrics",
    "parse_expression",
    "referenced_metrics",
    "rule_expressions",
]

PROMETHEUS_SERIES = frozenset({"up"})
"""Series Prometheus makes itself (not exported by a job) that rules and dashboards use."""

# Grafana's built-in interval variables, replaced by a duration before an expression is parsed.
_GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")
_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_UID = re.compile(r"^[a-zA-Z0-9_-]{1,40}$")


def parse_expression(expr: str) -> promql_parser.Expr:
    """Parse a PromQL expression (Grafana's ``$__rate_interval`` and the like allowed).

    Raises:
        PromQLError: With the parser's message when the expression is not valid PromQL.
        ImportError: When ``promql-parser`` is not installed.

    """
    try:
        import promql_parser
    except ImportError as exc:
        raise ImportError(
            "checking PromQL needs promql-parser; install requirements/base.in "
            "(scripts/setup.sh) or `pip install promql-parser`"
        ) from exc
    for variable in _GRAFANA_INTERVALS:
        expr = expr.replace(variable, "1m")
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise PromQLError(expr, str(exc)) from None


class PromQLError(ValueError):
    """An expression that is not valid PromQL; ``reason`` is the parser's message."""

    def __init__(self, expr: str, reason: str) -> None:
        self.expr = expr
        self.reason = reason
        super().__init__(f"invalid PromQL {expr!r}: {reason}")


def expression_metrics(expr: str) -> frozenset[str]:
    """Every metric name a PromQL expression selects.

    Example:
        >>> sorted(expression_metrics('rate(a_total{x="1"}[5m]) / on() group_left b or up'))
        ['a_total', 'b', 'up']

    Raises:
        ValueError: When the expression does not parse, or selects metrics by a regex on
            ``__name__`` (which names no metric).

    """
    tree = parse_expression(expr)  # first: it says what to install if the parser is missing
    import promql_parser

    names: set[str] = set()
    problems: list[str] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name != "__name__":
                    continue
                if matcher.op == promql_parser.MatchOp.Equal:
                    names.add(matcher.value)
                else:
                    problems.append(f"{expr!r} selects metrics by a pattern on __name__")
        return True

    promql_parser.walk(tree, visit)
    if problems:
        raise ValueError(problems[0])
    return frozenset(names)


def _load_yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def rule_expressions(text: str) -> list[str]:
    """The ``expr`` of every rule in a Prometheus rules file, in file order."""
    document = _load_yaml(text)
    return [
        rule["expr"]
        for group in document.get("groups", [])
        for rule in group.get("rules", [])
        if isinstance(rule, dict) and isinstance(rule.get("expr"), str)
    ]


def _walk_panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if isinstance(panel, dict):
            yield panel
            yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions(text: str) -> list[str]:
    """The ``expr`` of every query of every panel of a Grafana dashboard, in panel order."""
    dashboard = json.loads(text)
    return [
        target["expr"]
        for panel in _walk_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
        if isinstance(target.get("expr"), str)
    ]


def referenced_metrics(text: str) -> frozenset[str]:
    """Every metric a rules file or a dashboard (JSON) queries; series it records left out.

    The result holds exported sample names (``usp_job_latency_seconds_bucket``, as a job's
    ``/metrics`` shows them) and Prometheus' own :data:`PROMETHEUS_SERIES`.

    Raises:
        ValueError: When an expression does not parse.

    """
    if text.lstrip().startswith("{"):
        return frozenset().union(*map(expression_metrics, dashboard_expressions(text)))
    recorded = {
        rule.get("record")
        for group in _load_yaml(text).get("groups", [])
        for rule in group.get("rules", [])
        if isinstance(rule, dict)
    }
    found = frozenset().union(*map(expression_metrics, rule_expressions(text)))
    return frozenset(name for name in found if name not in recorded)


_GROUP_KEYS = {"name", "interval", "rules", "limit", "query_offset", "labels"}
_ALERT_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
_RECORD_KEYS = {"record", "expr", "labels"}


def check_rules(text: str) -> list[str]:
    """Every problem of a Prometheus rules file: most of what promtool's ``check rules`` finds.

    Checks the structure (groups → rules, known keys only), that each rule records or alerts,
    every ``expr`` parses as PromQL, durations are Prometheus durations, names are valid
    metric and label names, and group and alert names are unique in the file.

    Example:
        >>> rules = "groups: [{name: g, rules: [{alert: A, expr: 'rate(x[5m) > 1', for: 5min}]}]"
        >>> for problem in check_rules(rules):
        ...     print(problem)
        group 'g' rule 1 (alert 'A'): for: '5min' is not a Prometheus duration such as 5m or 1h30m
        group 'g' rule 1 (alert 'A'): expr: unexpected character inside brackets: ')'

    """
    try:
        document = _load_yaml(text)
    except YAMLError as exc:
        return [f"not valid YAML: {exc}"]
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        return ["expected a mapping with a list of groups under 'groups'"]
    problems = [f"unknown top-level key {key!r}" for key in document if key != "groups"]
    groups_seen: set[str] = set()
    alerts_seen: dict[str, str] = {}
    for g, group in enumerate(document["groups"], 1):
        if not isinstance(group, dict):
            problems.append(f"group {g}: expected a mapping")
            continue
        name = group.get("name")
        where = f"group {name!r}" if isinstance(name, str) and name else f"group {g}"
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: name is missing")
        elif name in groups_seen:
            problems.append(f"{where}: the group name is used twice")
        else:
            groups_seen.add(name)
        problems += [f"{where}: unknown key {k!r}" for k in sorted(set(group) - _GROUP_KEYS)]
        for key in ("interval", "query_offset"):
            if key in group:
                problems += _duration_problem(f"{where}: {key}", group[key])
        rules = group.get("rules")
        if not isinstance(rules, list) or not rules:
            problems.append(f"{where}: rules must be a non-empty list")
            continue
        for r, rule in enumerate(rules, 1):
            problems += _rule_problems(f"{where} rule {r}", rule, name, alerts_seen)
    return problems


def _rule_problems(where: str, rule: Any, group: Any, alerts_seen: dict[str, str]) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: expected a mapping"]
    alert, record = rule.get("alert"), rule.get("record")
    if (alert is None) == (record is None):
        return [f"{where}: a rule needs exactly one of 'alert' and 'record'"]
    problems: list[str] = []
    if alert is not None:
        where += f" (alert {alert!r})"
        allowed = _ALERT_KEYS
        if not isinstance(alert, str) or not _METRIC_NAME.match(alert):
            problems.append(f"{where}: alert names are letters, digits, '_' and ':'")
        elif alert in alerts_seen:
            problems.append(f"{where}: alert name also used in group {alerts_seen[alert]!r}")
        else:
            alerts_seen[alert] = str(group)
        for key in ("for", "keep_firing_for"):
            if key in rule:
                problems += _duration_problem(f"{where}: {key}", rule[key])
        problems += _mapping_problems(f"{where}: annotations", rule.get("annotations", {}))
    else:
        where += f" (record {record!r})"
        allowed = _RECORD_KEYS
        if not isinstance(record, str) or not _METRIC_NAME.match(record):
            problems.append(f"{where}: record must be a valid metric name")
    problems += [f"{where}: unknown key {k!r}" for k in sorted(set(rule) - allowed)]
    problems += _mapping_problems(f"{where}: labels", rule.get("labels", {}))
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        problems.append(f"{where}: expr is missing")
    else:
        try:
            parse_expression(expr)
        except PromQLError as exc:
            problems.append(f"{where}: expr: {exc.reason}")
    return problems


def _duration_problem(where: str, value: Any) -> list[str]:
    if isinstance(value, str) and value and _DURATION.match(value):
        return []
    return [f"{where}: {value!r} is not a Prometheus duration such as 5m or 1h30m"]


def _mapping_problems(where: str, mapping: Any) -> list[str]:
    if not isinstance(mapping, dict):
        return [f"{where}: expected a mapping of names to strings"]
    problems = []
    for key, value in mapping.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
            problems.append(f"{where}: {key!r} is not a valid label name")
        if not isinstance(value, str):
            problems.append(f"{where}: {key}: the value must be a string, not {value!r}")
        elif value.count("{{") != value.count("}}"):
            problems.append(f"{where}: {key}: unbalanced {{{{ }}}} in the template")
    return problems


def check_dashboard(text: str) -> list[str]:
    """Every problem that would stop Grafana importing a generated dashboard, or its queries.

    Checks the fields Grafana needs (``title``, a valid ``uid``, ``schemaVersion``), the
    ``$datasource`` variable, unique panel ids, and that every query names that data source,
    has a unique ``refId`` and parses as PromQL.
    """
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as exc:
        return [f"not valid JSON: {exc}"]
    problems: list[str] = []
    if not isinstance(dashboard.get("title"), str) or not dashboard["title"]:
        problems.append("title is missing")
    if not isinstance(dashboard.get("uid"), str) or not _UID.match(dashboard["uid"]):
        problems.append("uid must be 1 to 40 letters, digits, '-' or '_'")
    if not isinstance(dashboard.get("schemaVersion"), int):
        problems.append("schemaVersion is missing")
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in variables):
        problems.append("no $datasource variable of type datasource")
    ids: set[int] = set()
    for panel in _walk_panels(dashboard.get("panels", [])):
        where = f"panel {panel.get('title')!r}"
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            problems.append(f"{where}: id must be a unique integer")
        ids.add(panel.get("id", 0))
        if not {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})):
            problems.append(f"{where}: gridPos needs h, w, x and y")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(set(refs)) != len(refs):
            problems.append(f"{where}: refIds repeat")
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource")) != DATASOURCE:
                problems.append(f"{where}: query {target.get('refId')} not on $datasource")
            try:
                parse_expression(target.get("expr", ""))
            except ValueError as exc:
                problems.append(f"{where}: query {target.get('refId')}: {exc}")
        if panel.get("type") != "row" and not panel.get("targets"):
            problems.append(f"{where}: no queries")
    return problems
