"""Every PromQL expression the chart ships (the Grafana dashboard's panels and variables, the
PrometheusRule's alerts) names only series the operator really exports, read from a live metrics
registry, plus the few external series listed below; and the dashboard shows every exported metric.

A renamed metric thus breaks this test instead of silently emptying a panel or disarming an
alert. tests/e2e/test_prometheus.py then evaluates the same expressions on a real Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_identity.ops.metrics import Metrics
from support.tools import render_chart

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "agent-identity-operator"
DASHBOARD = CHART / "dashboards" / "agent-identity.json"

# Series that are not the operator's: Prometheus' own per-target `up`, and the API server's count
# of admission webhook rejections (calling_webhook_error: it could not reach the webhook).
EXTERNAL = {"up", "apiserver_admission_webhook_rejection_count"}

# Sample names per metric type, as prometheus_client exposes them (text format 0.0.4).
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported_families() -> dict[str, set[str]]:
    """Metric family -> the sample names it exposes, from the operator's own registry."""
    metrics = Metrics()
    metrics.watch(lambda: [])
    metrics.watch_pod_security(lambda: {})
    return {family.name: {family.name + suffix for suffix in SUFFIXES[family.type]} for family in metrics.registry.collect()}


def exported_series() -> set[str]:
    return set().union(*exported_families().values())


# --- a small PromQL scanner: the metric names an expression selects --------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<series>.+?)\s*,)?\s*(?P<label>\w+)\s*\)\s*$")


def metric_names(expr: str) -> set[str]:
    """Names of the series selected by a PromQL expression (or by a Grafana label_values query).

    Strings, label matchers, range/subquery brackets and grouping label lists are removed first,
    so only metric names, function names and keywords remain; a name followed by "(" is a function.
    """
    values_query = _LABEL_VALUES.match(expr)
    if values_query:
        return metric_names(values_query["series"] or "")
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m[1] for m in _IDENTIFIER.finditer(text) if not m[2] and m[1].lower() not in _KEYWORDS}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (phase) (agentidentity_identities{job=~"$job"})', {"agentidentity_identities"}),
        ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{a="{b}"}[$__rate_interval])))', {"x_bucket"}),
        ('label_replace(sum(a{phase="Ready"}), "risk_level", "none", "risk_level", "")', {"a"}),
        ('(max(up{job="j"}) == 0) or absent(up) or sum(increase(b[5m] offset 1m)) > 1e3', {"up", "b"}),
        ("a / on (x, y) group_left (z) b unless bool c", {"a", "b", "c"}),
        ("sum without (instance) (rate(a[5m:30s]))", {"a"}),
        ('label_values(agentidentity_identities{phase="Ready"}, job)', {"agentidentity_identities"}),
        ("label_values(job)", set()),
        ("vector(1) > 0", set()),
    ],
)
def test_the_scanner_finds_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_registry_exports_the_documented_metrics() -> None:
    families = exported_families()
    assert all(name.startswith("agentidentity_") for name in families)
    # At least these (README, chart README); a new one must also get a panel, see below.
    assert {
        "agentidentity_identities",
        "agentidentity_delegation_depth",
        "agentidentity_overdue_identities",
        "agentidentity_provisioned",
        "agentidentity_expired",
        "agentidentity_revoked",
        "agentidentity_denied",
        "agentidentity_tokens_issued",
        "agentidentity_token_failures",
        "agentidentity_assertions_issued",
        "agentidentity_assertion_failures",
        "agentidentity_reconcile_errors",
        "agentidentity_webhook_requests",
        "agentidentity_ready_latency_seconds",
        "agentidentity_retirement_lag_seconds",
        "agentidentity_namespaces_without_pod_security",
        "agentidentity_namespace_pod_security_enforced",
    } <= set(families)
    # The suffix table matches what the registry really writes for the series it already has.
    metrics = Metrics()
    metrics.watch(lambda: [])
    metrics.watch_pod_security(lambda: {"served": True})
    samples = {sample.name for family in metrics.registry.collect() for sample in family.samples}
    assert samples and samples <= exported_series()


# --- the dashboard -------------------------------------------------------------------------------------


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, in rows too, and every query variable."""
    dashboard = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']}", query["query"] if isinstance(query, dict) else query


DASHBOARD_QUERIES = list(dashboard_queries())


@pytest.mark.parametrize(("where", "expr"), DASHBOARD_QUERIES, ids=[w for w, _ in DASHBOARD_QUERIES])
def test_dashboard_queries_use_only_exported_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: selects no series: {expr}"
    assert names <= exported_series() | EXTERNAL, f"{where}: unknown series {sorted(names - exported_series() - EXTERNAL)}"


def test_dashboard_shows_every_exported_metric() -> None:
    used = set().union(*(metric_names(expr) for _, expr in DASHBOARD_QUERIES))
    unused = [family for family, series in exported_families().items() if not series & used]
    assert unused == [], "exported metrics no dashboard panel shows"
    assert used & EXTERNAL == {"up"}


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] == "agent-identity-operator" and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        for target in panel.get("targets", []):
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["expr"].count("{") == target["expr"].count("}"), target["expr"]


# --- the PrometheusRule ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    """The chart's PrometheusRule rules, rendered by the pinned Helm (scripts/install-helm.sh)."""
    rendered = render_chart("--set", "metrics.prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml")
    (rule,) = rendered
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert rules
    return rules


def test_alert_expressions_use_only_exported_metrics(alert_rules: list[dict[str, Any]]) -> None:
    for rule in alert_rules:
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']}: selects no series"
        assert names <= exported_series() | EXTERNAL, (
            f"{rule['alert']}: unknown series {sorted(names - exported_series() - EXTERNAL)}"
        )
        external = names - exported_series()
        assert all(name in EXTERNAL for name in external if name.startswith("apiserver_"))


def test_external_series_are_used_where_expected(alert_rules: list[dict[str, Any]]) -> None:
    external = {rule["alert"]: metric_names(rule["expr"]) & EXTERNAL for rule in alert_rules}
    assert {alert: names for alert, names in external.items() if names} == {"AgentIdentityWebhookUnavailable": EXTERNAL}
